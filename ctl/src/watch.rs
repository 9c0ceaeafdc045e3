//! `aictl watch`: the daemon's state changes as they happen (`PropertiesChanged` of every
//! object it serves), one line each, until Ctrl-C or `--count` changes.

use std::{collections::HashMap, io::Write as _, process::ExitCode};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use zbus::{Connection, MatchRule, MessageStream, OwnedVariant as OwnedValue, message::Type};

use crate::dict_json;

pub async fn run(connection: &Connection, json: bool, count: Option<u64>) -> anyhow::Result<ExitCode> {
    // The daemon's unique name, so no other client's signals pass for the daemon's.
    let owner = zbus::fdo::DBusProxy::new(connection)
        .await?
        .get_name_owner(aiesim_dbus::BUS_NAME.try_into()?)
        .await
        .context("aiesimd is not running on this bus")?;
    let rule = MatchRule::builder()
        .msg_type(Type::Signal)
        .sender(owner.as_str())
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path_namespace(aiesim_dbus::ROOT_PATH)
        .build()?;
    let mut stream = MessageStream::for_match_rule(rule, connection, std::num::NonZeroUsize::new(64))
        .await
        .context("cannot subscribe to the daemon's changes")?;
    eprintln!("aictl: watching {} (Ctrl-C stops)", aiesim_dbus::BUS_NAME);
    let mut seen = 0;
    let mut stdout = std::io::stdout().lock();
    while count.is_none_or(|c| seen < c) {
        let message = tokio::select! {
            m = stream.next() => m.context("the bus connection closed")?.context("a bad message from the bus")?,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let path = message.header().path().map(ToString::to_string).unwrap_or_default();
        let Ok((interface, changed, invalidated)) = message
            .body()
            .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
        else {
            continue;
        };
        seen += 1;
        let changed = dict_json(&changed);
        if json {
            let line = serde_json::json!({
                "path": path, "interface": interface, "changed": changed, "invalidated": invalidated,
            });
            writeln!(stdout, "{line}")?;
        } else {
            let short = interface.rsplit('.').next().unwrap_or(&interface);
            let mut keys: Vec<_> = changed.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            let values: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(stdout, "{path} {short}: {}", values.join(" "))?;
        }
        stdout.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
