//! `aictl chat`: a conversation with the cloud AI. Each line read is a turn; the history of
//! the session goes with every request, so the model answers in context. `/reset` forgets
//! the history, `/quit` or end of input ends the session.

use std::process::ExitCode;

use aiesim_dbus::{ChatOptions, Message, Priority};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use zbus::Connection;

use crate::{Answer, stream_answer};

/// Turns (a question and its answer) kept; older ones are dropped first.
const MAX_TURNS: usize = 16;

pub struct Options {
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub system: Option<String>,
    pub quiet: bool,
}

pub async fn run(connection: &Connection, options: Options) -> anyhow::Result<ExitCode> {
    let interactive = stdin_is_terminal();
    if interactive {
        eprintln!("aictl chat: one line is one turn; /reset forgets, /quit or Ctrl-D ends.");
    }
    let mut history: Vec<(String, String)> = Vec::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut failed = false;
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next_line().await? else { break };
        let line = line.trim();
        match line {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                history.clear();
                eprintln!("aictl chat: history forgotten");
                continue;
            }
            _ => {}
        }
        let mut messages = Vec::new();
        if let Some(system) = &options.system {
            messages.push(Message::new("system", system.clone()));
        }
        for (question, answer) in &history {
            messages.push(Message::new("user", question.clone()));
            messages.push(Message::new("assistant", answer.clone()));
        }
        messages.push(Message::new("user", line.to_owned()));
        let request = ChatOptions {
            messages,
            model: options.model.clone(),
            max_tokens: options.max_tokens,
            temperature: None,
            priority: Priority::Interactive,
        };
        match stream_answer(connection, &request, &[], options.quiet).await? {
            Answer::Done(answer) => {
                history.push((line.to_owned(), answer));
                if history.len() > MAX_TURNS {
                    history.remove(0);
                }
            }
            // The turn is not kept; the conversation goes on.
            Answer::Failed => failed = true,
            Answer::Cancelled => return Ok(ExitCode::from(130)),
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdin().is_terminal()
}
