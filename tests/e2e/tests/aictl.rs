//! aictl's conversational and watching commands against the running daemon: `chat` keeps the
//! session's history, `watch` prints state changes as they happen.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::Stdio,
    time::{Duration, Instant},
};

use aiesim_e2e::{World, WorldOptions, output_text as text, skip_unless_ready};

/// The prompt tokens of each "-- N tokens charged (P prompt + C completion)" line.
fn prompt_tokens(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter_map(|l| l.split('(').nth(1))
        .filter_map(|l| l.split(" prompt").next())
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

#[test]
fn chat_answers_each_turn_in_the_context_of_the_earlier_ones() {
    if skip_unless_ready("chat_answers_each_turn_in_the_context_of_the_earlier_ones") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let mut chat = world
        .aictl()
        .args(["chat", "--max-tokens", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin
        .take()
        .unwrap()
        .write_all(b"My name is Ada.\nWhat is my name?\n/reset\nWhat is my name?\n")
        .unwrap();
    let out = chat.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let prompts = prompt_tokens(&stderr);
    assert_eq!(prompts.len(), 3, "three turns answered: {}", text(&out));
    // The second turn carried the first question and its answer; after /reset the same
    // question goes alone.
    assert!(prompts[1] > prompts[2], "{prompts:?}\n{}", text(&out));
    assert!(stderr.contains("history forgotten"), "{stderr}");
}

#[test]
fn watch_prints_the_changes_as_they_happen() {
    if skip_unless_ready("watch_prints_the_changes_as_they_happen") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let mut watch = world
        .aictl()
        .args(["watch", "--json", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Subscribed once it says so.
    let mut said = String::new();
    BufReader::new(watch.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(said.contains("watching"), "{said}");
    world.modem_control("card remove").unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no change was printed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let mut line = String::new();
    BufReader::new(watch.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(
        doc["path"].as_str().unwrap().starts_with("/org/aiesim/AiEsim1/Modem/"),
        "{doc}"
    );
    assert!(doc["changed"].as_object().is_some_and(|c| !c.is_empty()), "{doc}");
}
