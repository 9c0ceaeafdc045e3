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
