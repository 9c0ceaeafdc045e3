//! The AI applet's non-volatile memory as a file (`--card-state`), so a restarted simulator
//! keeps its account. Each change is written whole to a temporary file, synced and renamed
//! over the old one: a crash leaves either the previous state or the new one.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use aiesim_ai_applet::CardState;

use super::keys::CardKey;

const HEADER: &str = "aiesim-card-state 1";

/// What the applet keeps between commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub balance: u64,
    pub sequence: u32,
    pub state: CardState,
    /// The highest host time a TOP-UP brought, which the card's clock never goes below.
    pub highest_time: u64,
    /// Vouchers expiring at or before this were evicted from the store (or could have been).
    pub replay_floor: u64,
    /// Redeemed voucher ids with their expiry, oldest first.
    pub vouchers: VecDeque<([u8; 16], u64)>,
}

impl Account {
    /// A freshly personalised, active account.
    pub fn new(balance: u64) -> Self {
        Self {
            balance,
            sequence: 0,
            state: CardState::Active,
            highest_time: 0,
            replay_floor: 0,
            vouchers: VecDeque::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read the card state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not write the card state file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the card state file {path} is malformed at line {line}")]
    Format { path: PathBuf, line: usize },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (at, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * at..2 * at + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The account and account key in `path`, or `None` if there is no such file yet.
pub fn load(path: &Path) -> Result<Option<(Account, CardKey)>, Error> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut account = Account::new(0);
    let mut key = None;
    for (index, line) in text.lines().enumerate() {
        let malformed = || Error::Format {
            path: path.to_owned(),
            line: index + 1,
        };
        if index == 0 {
            if line != HEADER {
                return Err(malformed());
            }
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match fields.as_slice() {
            [] => Some(()),
            ["account-key", scalar] => unhex::<32>(scalar)
                .and_then(|s| CardKey::from_scalar(&s))
                .map(|k| key = Some(k)),
            ["balance", n] => n.parse().ok().map(|n| account.balance = n),
            ["sequence", n] => n.parse().ok().map(|n| account.sequence = n),
            ["state", n] => n.parse().ok().map(|n| account.state = CardState::from_code(n)),
            ["highest-time", n] => n.parse().ok().map(|n| account.highest_time = n),
            ["replay-floor", n] => n.parse().ok().map(|n| account.replay_floor = n),
            ["voucher", id, expiry] => unhex::<16>(id)
                .zip(expiry.parse().ok())
                .map(|voucher| account.vouchers.push_back(voucher)),
            _ => None,
        };
        parsed.ok_or_else(malformed)?;
    }
    let key = key.ok_or(Error::Format {
        path: path.to_owned(),
        line: text.lines().count(),
    })?;
    Ok(Some((account, key)))
}

/// Replaces the file at `path` with `account` and `key`, durably.
pub fn save(path: &Path, account: &Account, key: &CardKey) -> Result<(), Error> {
    let Account {
        balance,
        sequence,
        state,
        highest_time,
        replay_floor,
        vouchers,
    } = account;
    let mut text = format!(
        "{HEADER}\naccount-key {}\nbalance {balance}\nsequence {sequence}\nstate {}\nhighest-time {highest_time}\n\
         replay-floor {replay_floor}\n",
        hex(&key.scalar()),
        state.code(),
    );
    for (id, expiry) in vouchers {
        let _ = writeln!(text, "voucher {} {expiry}", hex(id));
    }
    let failed = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = fs::File::create(&temporary).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    fs::rename(&temporary, path).map_err(failed)?;
    // The rename itself is durable only once the directory is synced.
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(directory).and_then(|d| d.sync_all()).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_survives_a_round_trip_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card");
        assert!(load(&path).unwrap().is_none());
        let key = CardKey::generate();
        let account = Account {
            balance: 42,
            sequence: 7,
            state: CardState::Blocked,
            highest_time: 1_700_000_000,
            replay_floor: 12,
            vouchers: [([1; 16], 99), ([2; 16], 100)].into(),
        };
        save(&path, &account, &key).unwrap();
        let (loaded, loaded_key) = load(&path).unwrap().unwrap();
        assert_eq!(loaded, account);
        assert_eq!(loaded_key.public(), key.public());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );

        fs::write(&path, format!("{HEADER}\nbalance x\n")).unwrap();
        assert!(matches!(load(&path), Err(Error::Format { line: 2, .. })));
        fs::write(&path, format!("{HEADER}\nbalance 1\n")).unwrap();
        assert!(matches!(load(&path), Err(Error::Format { .. })), "the key is required");
        fs::write(&path, "something else\n").unwrap();
        assert!(matches!(load(&path), Err(Error::Format { line: 1, .. })));
    }
}
