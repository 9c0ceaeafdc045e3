//! How the project's tests skip. A test that cannot run for a missing prerequisite (a tool, the
//! model, root) calls [`skip`] and returns at once:
//!
//! - under CI (`CI` set to anything but empty, `false` or `0`) that is a failure instead;
//! - otherwise the reason goes to stderr and, when `cargo xtask test` runs the suite, to the
//!   file named by `AIESIM_SKIPS`, so the summary counts the test as skipped, not passed, and
//!   lists why.

use std::io::Write as _;

/// Whether the tests run under CI.
pub fn ci() -> bool {
    ci_value(std::env::var("CI").ok().as_deref())
}

fn ci_value(value: Option<&str>) -> bool {
    value.is_some_and(|v| !(v.is_empty() || v == "false" || v == "0"))
}

/// The environment variable naming the file skips are recorded in.
pub const SKIPS_FILE: &str = "AIESIM_SKIPS";

/// Skips the calling test for `reason` (returns true: the caller returns), or panics under CI.
/// The test is named by its thread, as the test harness names it.
pub fn skip(reason: &str) -> bool {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    assert!(!ci(), "{test} cannot run under CI: {reason}");
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os(SKIPS_FILE) {
        // One short append per skip: lines from parallel tests do not interleave.
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = file.write_all(format!("{test}\t{}\n", reason.replace(['\n', '\t'], " ")).as_bytes());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_anything_but_empty_false_or_zero() {
        for (value, ci) in [
            (None, false),
            (Some(""), false),
            (Some("false"), false),
            (Some("0"), false),
            (Some("true"), true),
            (Some("1"), true),
            (Some("yes"), true),
        ] {
            assert_eq!(ci_value(value), ci, "{value:?}");
        }
    }
}
