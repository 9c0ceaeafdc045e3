//! Seeds each target's corpus (`corpus/<target>/seed-*`) with realistic inputs, so that a first
//! run starts from real traffic; libFuzzer adds its own finds beside them.

use std::{env, fs, io, path::Path};

/// An `OpenAI` stream as the test cloud sends it: role, text, finish, usage, `[DONE]`.
const OPENAI_STREAM: &str = concat!(
    r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

/// llama.cpp's server: CRLF, usage and timings on the finishing chunk.
const LLAMA_STREAM: &str = concat!(
    r#"data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"Hi"}}],"created":1,"id":"chatcmpl-x","model":"smollm2","system_fingerprint":"b4000","object":"chat.completion.chunk"}"#,
    "\r\n\r\n",
    r#"data: {"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"created":1,"id":"chatcmpl-x","model":"smollm2","object":"chat.completion.chunk","usage":{"completion_tokens":8,"prompt_tokens":20,"total_tokens":28},"timings":{"prompt_n":20,"predicted_n":8}}"#,
    "\r\n\r\n",
    "data: [DONE]\r\n\r\n",
);

/// An error after the stream started, a keep-alive comment and a named event.
const ERROR_STREAM: &str = concat!(
    ": keep-alive\n\n",
    r#"data: {"choices":[{"index":0,"delta":{"content":"par"}}]}"#,
    "\n\n",
    "event: error\n",
    r#"data: {"error":{"message":"the model is overloaded","type":"server_error","param":null,"code":null}}"#,
    "\n\n",
);

/// The SSE parser's own awkward cases: BOM, CR-only ends, multi-line data, id and retry.
const ODD_STREAM: &[u8] = b"\xEF\xBB\xBF: c\r\ndata: {\"a\":1}\r\n\r\nevent: usage\ndata:first\ndata:  second\n\n\
    data\n\nid: 7\nretry: 10\n\ndata: x\rdata: y\r\rdata: \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x91\x8B\n\ndata: [DONE]\n\n";

/// The `sse` target's header byte: how many chunk sizes follow (bits 0-2), which limit (bits 3-4).
fn sse(limit: u8, sizes: &[u8], body: &[u8]) -> Vec<u8> {
    let count = u8::try_from(sizes.len()).expect("at most 7 sizes");
    let mut input = vec![(limit << 3) | count];
    input.extend_from_slice(sizes);
    input.extend_from_slice(body);
    input
}

/// A qmicli session through `qmi-proxy`: open, allocate a DMS id (the fuzz modem hands out 2
/// first), ask with it, release it, and a Sync; then the same before the handshake.
fn qmi_proxy_session() -> (Vec<u8>, Vec<u8>) {
    use aiesim_qmi::{Message as _, Service, ctl, dms};
    let frames = [
        ctl::InternalProxyOpen {
            device_path: "/dev/cdc-wdm0".into(),
        }
        .to_frame(0, 1),
        ctl::AllocateCid { service: Service::DMS }.to_frame(0, 2),
        dms::GetIds.to_frame(2, 1),
        ctl::ReleaseCid {
            service: Service::DMS,
            client_id: 2,
        }
        .to_frame(0, 3),
        ctl::Sync.to_frame(0, 4),
    ];
    let bytes: Vec<Vec<u8>> = frames
        .into_iter()
        .map(|f| f.and_then(|f| f.encode()).expect("a seed frame encodes"))
        .collect();
    (bytes.concat(), bytes[1..].concat())
}

/// An mbimcli session through `mbim-proxy`: OPEN, the configuration, a subscription list, a
/// command and CLOSE; and the same cut into the smallest fragments MBIM allows.
fn mbim_proxy_session() -> (Vec<u8>, Vec<u8>) {
    use aiesim_mbim::{
        Body, ControlMessage, MIN_CONTROL_TRANSFER, Message as _, Uuid, basic_connect as bc, proxy_control,
    };
    let command = |tid, command: Result<_, _>| ControlMessage::new(tid, Body::Command(command.expect("a seed encodes")));
    let messages = [
        ControlMessage::new(1, Body::Open { max_control_transfer: 4096 }),
        command(
            2,
            proxy_control::ConfigurationSet {
                device_path: "/dev/cdc-wdm0".into(),
                timeout: 30,
            }
            .to_command(),
        ),
        command(
            3,
            bc::DeviceServiceSubscribeListSet {
                events: vec![
                    bc::EventEntry {
                        service: Uuid::BASIC_CONNECT,
                        cids: vec![bc::SIGNAL_STATE, bc::REGISTER_STATE],
                    },
                    bc::EventEntry {
                        service: Uuid::MS_UICC_LOW_LEVEL_ACCESS,
                        cids: vec![1],
                    },
                ],
            }
            .to_command(),
        ),
        command(4, bc::DeviceCapsQuery {}.to_command()),
        ControlMessage::new(5, Body::Close),
    ];
    let whole = messages
        .iter()
        .map(|m| m.encode().expect("a seed encodes"))
        .collect::<Vec<_>>()
        .concat();
    let fragments = messages
        .iter()
        .flat_map(|m| m.encode_fragments(MIN_CONTROL_TRANSFER).expect("a seed encodes"))
        .collect::<Vec<_>>()
        .concat();
    (whole, fragments)
}

fn main() -> io::Result<()> {
    let dir = env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&dir);
    let packaged_config = dir.join("../../../systemd/aiesimd.toml");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", packaged_config.display());

    let corpus = dir.join("corpus");
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

    seed("sse", "openai-whole", &sse(3, &[], OPENAI_STREAM.as_bytes()))?;
    seed("sse", "openai-cut", &sse(3, &[7, 1, 0, 200], OPENAI_STREAM.as_bytes()))?;
    seed("sse", "llama-crlf-cut", &sse(2, &[1], LLAMA_STREAM.as_bytes()))?;
    seed("sse", "odd-bytewise", &sse(2, &[1, 0], ODD_STREAM))?;
    seed("sse", "too-long", &sse(0, &[3], b"data: 0123456789\n\n"))?;
    seed("sse", "error", &sse(1, &[5], ERROR_STREAM.as_bytes()))?;

    for (name, stream) in [
        ("openai", OPENAI_STREAM.as_bytes()),
        ("llama", LLAMA_STREAM.as_bytes()),
        ("error", ERROR_STREAM.as_bytes()),
        ("odd", ODD_STREAM),
    ] {
        seed("chunk", &format!("stream-{name}"), stream)?;
    }
    for (name, payload) in [
        (
            "delta",
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#,
        ),
        (
            "usage",
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}"#,
        ),
        (
            "in-band-error",
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        ),
        ("error-string", r#"{"error":"boom"}"#),
        ("done", "[DONE]"),
        (
            "error-body",
            r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        ),
        ("gateway-body", "<html><body>502 Bad Gateway</body></html>\r\n"),
    ] {
        seed("chunk", name, payload.as_bytes())?;
    }

    let (session, unopened) = qmi_proxy_session();
    seed("qmi_proxy", "session", &session)?;
    seed("qmi_proxy", "not-opened", &unopened)?;
    let (whole, fragments) = mbim_proxy_session();
    seed("mbim_proxy", "session", &whole)?;
    seed("mbim_proxy", "fragments", &fragments)?;

    seed("config", "packaged", &fs::read(&packaged_config)?)?;
    seed(
        "config",
        "endpoints",
        br#"bus = "unix:path=/run/aiesim/bus"
[modem]
device = "/dev/wwan0mbim0"
protocol = "mbim"
[fastpath]
enabled = false
[cloud]
bind_interface = "wwan0"
idle_timeout_ms = 10000
[budget]
app_tokens = 5000
default_max_tokens = 128
max_tokens_cap = 1024
[[endpoint]]
name = "metro"
url = "https://metro.ai.operator.example/v1"
tier = "metro"
models = ["assistant-small", "assistant-tiny"]
[[endpoint]]
name = "regional_2"
url = "http://127.0.0.1:8080/v1"
tier = "province"
models = ["m"]
"#,
    )?;
    Ok(())
}
