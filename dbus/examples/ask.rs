//! An app asking the device's cloud AI through the typed proxies of `aiesim-dbus`: one
//! streamed answer, then what it cost and what is left of the app's budget.
//!
//! `cargo run -p aiesim-dbus --example ask -- "What is an eSIM?"` (the system bus; set
//! `DBUS_SYSTEM_BUS_ADDRESS` for another one). The app's user must be in `aiesim-apps`.

use std::io::Write as _;

use aiesim_dbus::{
    ChatDict as _, ChatOptions, Message, StreamEvent,
    proxy::{BrokerProxy, BudgetProxy},
};
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let question = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    if question.is_empty() {
        return Err("usage: ask QUESTION".into());
    }
    let bus = zbus::Connection::system().await?;
    let broker = BrokerProxy::new(&bus).await?;
    let options = ChatOptions {
        messages: vec![Message::new("user", question)],
        max_tokens: Some(32),
        ..ChatOptions::default()
    };
    // The answer arrives on a socket as newline-delimited JSON events; closing it cancels.
    let (_request, fd) = broker.chat(options.to_chat_dict()?).await?;
    let socket = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(fd));
    socket.set_nonblocking(true)?;
    let mut events = BufReader::new(tokio::net::UnixStream::from_std(socket)?).lines();
    while let Some(line) = events.next_line().await? {
        match StreamEvent::from_line(&line)? {
            StreamEvent::Delta { text } => {
                print!("{text}");
                std::io::stdout().flush()?;
            }
            StreamEvent::Done { usage, charged, .. } => {
                println!();
                println!("charged {charged} tokens ({} completion)", usage.completion_tokens);
                break;
            }
            StreamEvent::Error { name, message } => return Err(format!("{name}: {message}").into()),
        }
    }
    let mine = BudgetProxy::new(&bus).await?.get_mine().await?;
    if let Some(available) = mine.get("available").and_then(|v| u64::try_from(v).ok()) {
        println!("{available} tokens left in this app's budget");
    }
    Ok(())
}
