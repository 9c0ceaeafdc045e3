//! Seeds each target's corpus (`corpus/<target>/seed-*`) with realistic inputs, encoded by the
//! same code apps use, so that a first run starts from real traffic.

use aiesim_dbus::ChatDict as _;
use std::{collections::BTreeMap, env, fs, io, path::Path};

use aiesim_dbus::{ChatOptions, Message, Priority, StreamEvent, Usage};
use zbus::{
    OwnedVariant, Variant,
    export::serde::Serialize,
    wire::{BE, DynamicType, LE, serialized::Context, to_bytes},
};

/// The `options` target's input: the byte-order header byte, then the body.
fn body<T: Serialize + DynamicType + ?Sized>(big_endian: bool, value: &T) -> Vec<u8> {
    let context = Context::new(if big_endian { BE } else { LE }, 0);
    let mut input = vec![u8::from(big_endian)];
    input.extend_from_slice(&to_bytes(context, value).expect("a seed encodes"));
    input
}

/// A dictionary in a fixed key order, so that a seed's bytes, and so the build, are reproducible.
fn sorted(dict: impl IntoIterator<Item = (String, OwnedVariant)>) -> BTreeMap<String, OwnedVariant> {
    dict.into_iter().collect()
}

fn main() -> io::Result<()> {
    let dir = env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let corpus = Path::new(&dir).join("corpus");
    println!("cargo:rerun-if-changed=build.rs");
    let seed = |target: &str, name: &str, bytes: &[u8]| -> io::Result<()> {
        let target_dir = corpus.join(target);
        fs::create_dir_all(&target_dir)?;
        let path = target_dir.join(format!("seed-{name}"));
        if fs::read(&path).ok().as_deref() != Some(bytes) {
            fs::write(&path, bytes)?;
        }
        // A seed deleted (or a corpus minimised away) is written again on the next build. Not the
        // whole directory: libFuzzer's own additions would then rebuild the target every run.
        println!("cargo:rerun-if-changed={}", path.display());
        Ok(())
    };

    let full = ChatOptions {
        messages: vec![
            Message::new("system", "Answer in one sentence."),
            Message::new("user", "What is an eSIM?"),
            Message::new(
                "assistant",
                "A SIM profile downloaded into a chip soldered on the board.",
            ),
            Message::new("user", "Thanks — and 5G SA? 👋"),
        ],
        model: Some("assistant-small".into()),
        max_tokens: Some(128),
        temperature: Some(0.7),
        priority: Priority::Background,
    };
    let minimal = ChatOptions {
        messages: vec![Message::new("user", "hi")],
        ..ChatOptions::default()
    };
    seed("options", "chat-le", &body(false, &sorted(full.to_chat_dict().expect("a text request encodes"))))?;
    seed("options", "chat-be", &body(true, &sorted(full.to_chat_dict().expect("a text request encodes"))))?;
    seed("options", "chat-minimal", &body(false, &sorted(minimal.to_chat_dict().expect("a text request encodes"))))?;
    seed(
        "options",
        "ask",
        &body(false, &("What is an eSIM?", sorted(full.to_ask_dict()))),
    )?;
    seed(
        "options",
        "ask-empty",
        &body(true, &("hi", sorted(minimal.to_ask_dict()))),
    )?;
    // Types an app may get wrong: a string for `u`, a variant in a variant.
    let odd: BTreeMap<&str, Variant<'_>> = [
        ("max_tokens", Variant::from("ten")),
        ("temperature", Variant::Variant(Box::new(Variant::from(1.5)))),
        ("model", Variant::from(7u32)),
    ]
    .into_iter()
    .collect();
    seed("options", "wrong-types", &body(false, &odd))?;

    let events = [
        StreamEvent::Delta {
            text: "Hello, \"world\"\n".into(),
        },
        StreamEvent::Done {
            usage: Usage {
                prompt_tokens: 12,
                completion_tokens: 8,
            },
            charged: 20,
            endpoint: "metro".into(),
            model: "assistant-small".into(),
        },
        StreamEvent::Error {
            name: "org.aiesim.AiEsim1.Error.BudgetExceeded".into(),
            message: "the app's token budget is spent".into(),
        },
    ];
    for (name, event) in ["delta", "done", "error"].into_iter().zip(&events) {
        seed("event", name, event.to_line().as_bytes())?;
    }

    seed("image", "png", &aiesim_wire::image::samples::png(640, 480))?;
    seed("image", "jpeg", &aiesim_wire::image::samples::jpeg(1024, 768))?;
    seed("image", "gif", b"GIF89a\x20\x01\x10\x00\x00\x00\x00")?;
    seed("image", "webp-lossy", b"RIFF\0\0\0\0WEBPVP8 \x0a\0\0\0\0\0\0\x9d\x01\x2a\x80\x02\xe0\x01")?;
    seed("image", "webp-lossless", b"RIFF\0\0\0\0WEBPVP8L\x05\0\0\0\x2f\x63\xc0\x0c\x00")?;
    seed("image", "webp-extended", b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\x10\0\0\0\xff\x0f\0\xff\x1f\0")?;
    Ok(())
}
