//! `cargo xtask fuzz`: every cargo-fuzz target, on the stable toolchain.
//!
//! cargo-fuzz passes rustc `-Z` flags (sanitizer coverage); `RUSTC_BOOTSTRAP=1` lets the stable
//! compiler accept them, so a machine with only stable can fuzz. The parsers hold no `unsafe`, so
//! no sanitizer is built in: libFuzzer still catches panics, overflows (debug assertions are on),
//! timeouts and runaway memory, at several times the speed of an `AddressSanitizer` build.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{display, root, without_cargo_run_env};

/// cargo-fuzz, pinned so that every machine builds the targets the same way.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Crates with a cargo-fuzz directory (`<crate>/fuzz`).
const FUZZED: &[&str] = &[
    "daemon/qmi",
    "daemon/mbim",
    "daemon/apdu",
    "daemon/es10",
    "daemon/iot-safe",
    "daemon/ai-applet",
    "daemon/journal",
    "daemon/credential",
    "daemon/aiesimd",
    "dbus",
];

/// The smoke pass: each target's corpus, then this many fresh inputs.
const SMOKE_RUNS: u64 = 4000;

/// How long each target runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    Seconds(u64),
    Runs(u64),
}

#[derive(Debug)]
pub struct Options {
    length: Length,
    /// An unoptimised build: quicker to make cold, slower to run (the smoke pass).
    dev: bool,
    /// `crate/target` or `crate` (the crate directory's last part), or every target.
    only: Vec<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut length = Length::Seconds(60);
        let mut only = Vec::new();
        let mut dev = false;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut number = |what: &str| -> anyhow::Result<u64> {
                args.next()
                    .with_context(|| format!("{what} needs a number"))?
                    .parse()
                    .with_context(|| format!("{what} needs a number"))
            };
            match arg.as_str() {
                "--seconds" => length = Length::Seconds(number("--seconds")?),
                "--runs" => length = Length::Runs(number("--runs")?),
                "--smoke" => {
                    length = Length::Runs(SMOKE_RUNS);
                    dev = true;
                }
                "--only" => only.push(args.next().context("--only needs crate/target")?.clone()),
                other => bail!("fuzz: unknown option \"{other}\""),
            }
        }
        Ok(Self { length, dev, only })
    }

    fn wants(&self, krate: &str, target: &str) -> bool {
        let short = Path::new(krate)
            .file_name()
            .map_or(krate.into(), |n| n.to_string_lossy());
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|o| *o == short || *o == format!("{short}/{target}"))
    }
}

/// libFuzzer's closing figures for one run of one target.
#[derive(Debug, Default)]
struct Figures {
    executions: u64,
    coverage: u64,
    features: u64,
    corpus: u64,
}

impl Figures {
    /// The last `#N ... cov: C ft: F corp: K/...` status line and the final stats.
    fn read(log: &str) -> Self {
        let mut figures = Self::default();
        for line in log.lines() {
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                figures.executions = n.trim().parse().unwrap_or(figures.executions);
            }
            if !line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            while let Some(word) = words.next() {
                let slot = match word {
                    "cov:" => &mut figures.coverage,
                    "ft:" => &mut figures.features,
                    "corp:" => &mut figures.corpus,
                    _ => continue,
                };
                if let Some(n) = words
                    .next()
                    .and_then(|v| v.split('/').next())
                    .and_then(|v| v.parse().ok())
                {
                    *slot = n;
                }
            }
        }
        figures
    }
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let cargo_fuzz = install()?;
    let target_dir = root().join("target/fuzz");
    let logs = target_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let started = Instant::now();
    let mut table = String::new();
    let mut failed = Vec::new();
    for krate in FUZZED {
        let dir = root().join(krate);
        let targets: Vec<String> = crate::output(fuzz_command(&cargo_fuzz, &dir).arg("list"))?
            .lines()
            .map(str::trim)
            .filter(|t| !t.is_empty() && options.wants(krate, t))
            .map(str::to_owned)
            .collect();
        if targets.is_empty() {
            continue;
        }
        // One build of all the crate's targets; each run then finds them built.
        crate::run(
            fuzz_command(&cargo_fuzz, &dir)
                .arg("build")
                .args(build_flags(&target_dir, options.dev)),
        )?;
        for target in targets {
            let name = format!("{}/{target}", krate.rsplit('/').next().unwrap_or(krate));
            let log = logs.join(format!("{}.log", name.replace('/', "-")));
            let mut cmd = fuzz_command(&cargo_fuzz, &dir);
            cmd.arg("run")
                .args(build_flags(&target_dir, options.dev))
                .arg(&target)
                .arg("--")
                .args(libfuzzer_flags(options.length));
            eprintln!("+ {} (log: {})", display(&cmd), log.display());
            let out = std::fs::File::create(&log)?;
            let status = cmd
                .stdout(Stdio::null())
                .stderr(out)
                .status()
                .with_context(|| format!("cannot run {}", display(&cmd)))?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let figures = Figures::read(&text);
            let finding = if status.success() {
                "none".to_owned()
            } else {
                // libFuzzer's own lines say what it found and where it saved the input.
                for line in text
                    .lines()
                    .filter(|l| l.contains("ERROR") || l.contains("panicked") || l.contains("Test unit written"))
                {
                    eprintln!("  {line}");
                }
                failed.push(name.clone());
                format!("FAILED ({status}), see {}", log.display())
            };
            let row = format!(
                "{name:<24} {:>12} {:>6} {:>7} {:>6}  {finding}",
                figures.executions, figures.coverage, figures.features, figures.corpus
            );
            eprintln!("{row}");
            writeln!(table, "{row}")?;
            append_history(&target_dir, &name, &figures, &finding)?;
        }
    }
    println!(
        "{:<24} {:>12} {:>6} {:>7} {:>6}  finding\n{table}fuzz: {} s in all",
        "target",
        "executions",
        "cov",
        "ft",
        "corpus",
        started.elapsed().as_secs()
    );
    if table.is_empty() {
        bail!("no fuzz target matched {:?}", options.only);
    }
    if !failed.is_empty() {
        bail!("fuzzing found a crash, a hang or a leak in {}", failed.join(", "));
    }
    Ok(())
}

/// cargo-fuzz in `.tools/bin` at the pinned version, installed from crates.io if missing.
fn install() -> anyhow::Result<PathBuf> {
    let tools = root().join(".tools");
    let cargo_fuzz = tools.join("bin/cargo-fuzz");
    let have = Command::new(&cargo_fuzz)
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if !have.is_some_and(|v| v.split_whitespace().any(|w| w == CARGO_FUZZ_VERSION)) {
        crate::run(
            crate::cargo()
                .args([
                    "install",
                    &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
                    "--locked",
                    "--force",
                    "--root",
                ])
                .arg(&tools),
        )?;
    }
    Ok(cargo_fuzz)
}

/// cargo-fuzz as cargo would call it, in the crate's directory, on the default (stable) toolchain.
fn fuzz_command(cargo_fuzz: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(cargo_fuzz);
    without_cargo_run_env(&mut cmd);
    cmd.arg("fuzz")
        .current_dir(dir)
        // Stable rustc takes cargo-fuzz's -Z flags; nothing else changes.
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        // The nested BPF build must not inherit the coverage flags; parsers need no BPF.
        .env("AYA_BUILD_SKIP", "1");
    cmd
}

/// The same for `build` and `run`, so that `run` finds what `build` made.
fn build_flags(target_dir: &Path, dev: bool) -> Vec<String> {
    vec![
        "--sanitizer=none".into(),
        if dev { "--dev" } else { "--release" }.into(),
        "--debug-assertions".into(),
        // One directory for every fuzz crate: dependencies they share are built once.
        format!("--target-dir={}", target_dir.display()),
    ]
}

fn libfuzzer_flags(length: Length) -> Vec<String> {
    let mut flags = vec![
        "-print_final_stats=1".to_owned(),
        // A parser that takes seconds over one input is a finding, not a slow run.
        "-timeout=10".to_owned(),
        "-rss_limit_mb=2048".to_owned(),
    ];
    flags.push(match length {
        Length::Seconds(s) => format!("-max_total_time={s}"),
        Length::Runs(n) => format!("-runs={n}"),
    });
    flags
}

/// One line per run in `target/fuzz/history.tsv`, so that a long pass run in slices adds up.
fn append_history(target_dir: &Path, name: &str, figures: &Figures, finding: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(target_dir.join("history.tsv"))?;
    writeln!(
        file,
        "{unix}\t{name}\t{}\t{}\t{}\t{}\t{finding}",
        figures.executions, figures.coverage, figures.features, figures.corpus
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_the_last_status_line_and_the_final_stats() {
        let log = "INFO: seed corpus: files: 6\n\
            #2\tINITED cov: 10 ft: 12 corp: 1/1b exec/s: 0 rss: 30Mb\n\
            #4000\tDONE   cov: 321 ft: 654 corp: 87/2301b lim: 43 exec/s: 0 rss: 40Mb\n\
            Done 4000 runs in 1 second(s)\n\
            stat::number_of_executed_units: 4006\n\
            stat::peak_rss_mb:              40\n";
        let f = Figures::read(log);
        assert_eq!((f.executions, f.coverage, f.features, f.corpus), (4006, 321, 654, 87));
    }

    #[test]
    fn only_picks_a_crate_or_one_of_its_targets() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let o = Options::parse(&args(&["--only", "qmi", "--only", "aiesimd/sse", "--smoke"])).unwrap();
        assert_eq!((o.length, o.dev), (Length::Runs(SMOKE_RUNS), true));
        assert!(o.wants("daemon/qmi", "frame"));
        assert!(o.wants("daemon/aiesimd", "sse"));
        assert!(!o.wants("daemon/aiesimd", "config"));
        assert!(!o.wants("daemon/mbim", "frame"));
        assert!(Options::parse(&args(&["--seconds"])).is_err());
        assert!(Options::parse(&args(&["--fast"])).is_err());
    }
}
