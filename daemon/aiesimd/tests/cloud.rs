//! The cloud client against a real language model (tests/cloud/server.mjs on SmolLM2-135M) and,
//! for faults that model cannot produce on cue, against canned HTTP answers on loopback.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

mod common;

use std::sync::Arc;

use aiesim_dbus::{Message, Usage};
use aiesimd::cloud::{ChatRequest, ChatStream, Cloud, CloudError, CloudEvent, HttpCloud, HttpOptions};
use futures_util::StreamExt;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    task::JoinHandle,
};

const MODEL_FILE: &str = ".tools/models/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Loading the model takes seconds, and longer while other builds share the two cores.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on a whole streamed answer of at most 16 tokens.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// Why the real model server cannot run here, if it cannot.
fn missing_prerequisite(root: &Path) -> Option<String> {
    match Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        _ => return Some("node is not installed".into()),
    }
    let module = root.join("tests/cloud/node_modules/node-llama-cpp/package.json");
    if !module.is_file() {
        return Some(format!("{} is missing", module.display()));
    }
    let model = root.join(MODEL_FILE);
    if !model.is_file() {
        return Some(format!("{} is missing", model.display()));
    }
    None
}

/// The real model server, stopped with SIGTERM (then SIGKILL) when dropped.
struct ModelServer {
    child: Child,
    base_url: String,
    log_file: tempfile::NamedTempFile,
}

impl ModelServer {
    /// Starts the server with `flags`, or returns `None` (after saying why) when this machine
    /// lacks node, the node modules or the model and CI is not set.
    fn start(flags: &[&str]) -> Option<Self> {
        let root = repo_root();
        if let Some(why) = missing_prerequisite(&root) {
            aiesim_skip::skip(&format!("{why} (run `cargo xtask setup` to install the test cloud)"));
            return None;
        }
        let log = tempfile::NamedTempFile::new().expect("a temporary log file");
        let mut command = Command::new("node");
        command
            .current_dir(&root)
            .arg("tests/cloud/server.mjs")
            .args([
                "--model",
                MODEL_FILE,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--context-size",
                "512",
            ])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("the log file reopens"));
        // SAFETY: prctl is async-signal-safe; it makes the server die with the test thread even
        // when the test process is killed before Drop runs.
        unsafe {
            command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }
        let mut child = command.spawn().expect("node starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut server = Self {
            child,
            base_url: String::new(),
            log_file: log,
        };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(e) => panic!(
                "the model server printed no LISTENING line ({e}); its log:\n{}",
                server.log()
            ),
        };
        let url = line
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "the server must listen on loopback, got {url}"
        );
        server.base_url = format!("{url}/v1");
        Some(server)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file.path()).unwrap_or_default()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("the model server ignored SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn options() -> HttpOptions {
    HttpOptions {
        bind_interface: None,
        ca_file: None,
        connect_timeout: Duration::from_secs(5),
        first_byte_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(30),
        keepalive_window: Duration::from_secs(30),
        credentials: None,
    }
}

fn request(max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: "smollm2-135m".into(),
        messages: vec![Message::new("user", "What is the capital of France?")],
        max_tokens,
        temperature: Some(0.0),
    }
}

/// Every item of a stream, with a bound on the whole.
async fn collect(stream: ChatStream) -> (Vec<CloudEvent>, Option<CloudError>) {
    let items: Vec<_> = tokio::time::timeout(ANSWER_TIMEOUT, stream.collect())
        .await
        .expect("the stream ends in time");
    let mut events = Vec::new();
    let mut error = None;
    for item in items {
        assert!(error.is_none(), "an error must be the last item");
        match item {
            Ok(e) => events.push(e),
            Err(e) => error = Some(e),
        }
    }
    (events, error)
}

fn text(events: &[CloudEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            CloudEvent::Delta(t) => Some(t.as_str()),
            CloudEvent::Usage(_) => None,
        })
        .collect()
}

fn usages(events: &[CloudEvent]) -> Vec<Usage> {
    events
        .iter()
        .filter_map(|e| match e {
            CloudEvent::Usage(u) => Some(*u),
            CloudEvent::Delta(_) => None,
        })
        .collect()
}

/// The whole error chain on one line, as the daemon logs it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[tokio::test]
async fn real_model_streams_deltas_then_usage() {
    let Some(server) = ModelServer::start(&[]) else { return };
    let cloud = HttpCloud::new(options()).unwrap();
    let started = Instant::now();
    let stream = cloud.chat(&server.base_url, &request(16)).await.unwrap();
    let (events, error) = collect(stream).await;
    assert!(error.is_none(), "{}", chain(&error.unwrap()));
    let answer = text(&events);
    eprintln!("answer in {:?}: {answer:?}; events {events:?}", started.elapsed());
    assert!(!answer.trim().is_empty(), "the model said nothing: {events:?}");
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, CloudEvent::Delta(t) if t.is_empty()))
    );
    let [usage] = usages(&events)[..] else {
        panic!("expected exactly one usage event: {events:?}")
    };
    assert!(
        matches!(events.last(), Some(CloudEvent::Usage(_))),
        "usage comes after the deltas"
    );
    assert!(
        usage.completion_tokens > 0 && usage.completion_tokens <= 16,
        "{usage:?}"
    );
    assert!(usage.prompt_tokens > 5, "{usage:?}");
    let deltas = u32::try_from(events.len() - 1).unwrap();
    assert!(deltas <= usage.completion_tokens, "{deltas} deltas for {usage:?}");

    // A second request on the same client, with a system prompt, reuses the pooled connection.
    let mut second = request(4);
    second.messages.insert(0, Message::new("system", "Answer in one word."));
    let (events, error) = collect(cloud.chat(&server.base_url, &second).await.unwrap()).await;
    assert!(error.is_none(), "{}", chain(&error.unwrap()));
    let [usage] = usages(&events)[..] else {
        panic!("expected exactly one usage event: {events:?}")
    };
    assert!(usage.completion_tokens <= 4 && usage.completion_tokens > 0, "{usage:?}");
    // The server logs a request a moment after its last byte went out.
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = server.log();
        if log.matches("POST /v1/chat/completions 200").count() >= 2 || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let answered: Vec<_> = log
        .lines()
        .filter(|l| l.contains("POST /v1/chat/completions 200"))
        .collect();
    assert_eq!(answered.len(), 2, "{log}");
    assert!(
        answered.iter().all(|l| l.ends_with("on connection 1")),
        "one pooled connection serves both: {log}"
    );

    // Dropping the stream closes the connection, and the server stops generating.
    let mut stream = cloud
        .chat(
            &server.base_url,
            &ChatRequest {
                max_tokens: 400,
                ..request(0)
            },
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(ANSWER_TIMEOUT, stream.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(CloudEvent::Delta(_)))), "{first:?}");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("stop abort") {
        assert!(
            Instant::now() < deadline,
            "generation went on after the client left:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    check_openai_shape(&server).await;
}

/// The model server's own contract, beside what `HttpCloud` uses.
async fn check_openai_shape(server: &ModelServer) {
    // HttpCloud::new, called before, installed the TLS crypto provider reqwest needs.
    let http = reqwest::Client::new();
    let root = server.base_url.trim_end_matches("/v1");
    let get = |path: &str| {
        let request = http.get(format!("{root}{path}"));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let post = |body: &'static str| {
        let request = http.post(format!("{root}/v1/chat/completions")).body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                serde_json::from_str::<serde_json::Value>(&response.text().await.unwrap()).unwrap(),
            )
        }
    };
    let (status, models) = get("/v1/models").await;
    assert_eq!(status, 200);
    assert!(models.contains("\"smollm2-135m\""), "{models}");
    assert_eq!(get("/health").await, (200, r#"{"status":"ok"}"#.to_owned()));
    assert_eq!(get("/nowhere").await.0, 404);

    let (status, reply) = post(r#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":4}"#).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["object"], "chat.completion");
    assert!(
        !reply["choices"][0]["message"]["content"].as_str().unwrap().is_empty(),
        "{reply}"
    );
    let completion = reply["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(completion > 0 && completion <= 4, "{reply}");

    for bad in [
        "{bad",
        "[]",
        r#"{"messages":[{"role":"user","content":"Hi"}]}"#,
        r#"{"model":"m","messages":[]}"#,
        r#"{"model":"m","messages":[{"role":"robot","content":"Hi"}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":0}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"temperature":"hot"}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":100000}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":100000,"stream":true}"#,
    ] {
        let (status, reply) = post(bad).await;
        assert_eq!(status, 400, "{bad}: {reply}");
        assert!(
            reply["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}: {reply}"
        );
    }
}

#[tokio::test]
async fn real_model_without_usage_is_not_an_error() {
    let Some(server) = ModelServer::start(&["--no-usage"]) else {
        return;
    };
    let cloud = HttpCloud::new(options()).unwrap();
    let (events, error) = collect(cloud.chat(&server.base_url, &request(8)).await.unwrap()).await;
    assert!(error.is_none(), "{}", chain(&error.unwrap()));
    assert!(!text(&events).is_empty(), "{events:?}");
    assert!(usages(&events).is_empty(), "{events:?}");
}

/// Posts one non-streamed chat request with `token` as the bearer, as any HTTP client would;
/// the status code and the body.
async fn post_with_token(base_url: &str, token: &str) -> (u16, String) {
    let authority = base_url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .expect("an http:// URL");
    let body = r#"{"model":"smollm2-135m","messages":[{"role":"user","content":"Hi"}],"max_tokens":1}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(authority).await.expect("the cloud accepts");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(ANSWER_TIMEOUT, stream.read_to_string(&mut answer))
        .await
        .expect("the cloud answers in time")
        .unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    (status, answer)
}

/// The device credential as the test cloud checks it, with node's own crypto: every request
/// has a token of its own, a token sent twice is refused the second time, and a token signed
/// on the card but expired is refused.
#[tokio::test]
async fn the_cloud_refuses_a_replayed_or_expired_card_signed_token() {
    use aiesimd::{
        cloud::Credentials as _,
        esim::{self, CardCredentials, Esim, Requirement},
        modem::{Modem, Protocol},
    };

    let Some(server) = ModelServer::start(&["--require-jwt"]) else {
        return;
    };
    let sim = common::Simulator::start_speaking(Protocol::Qmi, &[]);
    let modem = Arc::new(Modem::spawn(common::options_for(&sim.link, Protocol::Qmi)));
    let esim = Esim::spawn(Arc::clone(&modem));
    let mut card = esim.state();
    common::wait_for(&mut card, "read", |s| !s.eid.is_empty()).await;
    let credentials = CardCredentials::new(
        Arc::clone(&modem),
        esim.state(),
        aiesim_iot_safe::AID.to_vec(),
        Requirement::Required,
    );
    let first = credentials.bearer(&server.base_url).await.unwrap().expect("a token");
    let second = credentials.bearer(&server.base_url).await.unwrap().expect("a token");
    assert_ne!(first, second, "each request has a token of its own");

    let (status, answer) = post_with_token(&server.base_url, &first).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post_with_token(&server.base_url, &first).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("replayed"), "{answer}");
    let (status, answer) = post_with_token(&server.base_url, &second).await;
    assert_eq!(status, 200, "{answer}");

    // Signed by the card like any other, but its life ended five minutes ago.
    let credential = esim::load_credential(&modem, &aiesim_iot_safe::AID).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let eid = esim.state().borrow().eid.clone();
    let claims = aiesim_credential::Claims {
        iss: format!("eid:{eid}"),
        sub: "aiesimd".into(),
        aud: aiesim_credential::origin_of(&server.base_url).unwrap(),
        iat: now - 600,
        nbf: now - 600,
        exp: now - 300,
        jti: "00112233445566778899aabbccddeeff".into(),
        extra: std::collections::BTreeMap::new(),
    };
    let header = aiesim_credential::Header {
        kid: None,
        x5c: Some(vec![credential.certificate.clone()]),
    };
    let unsigned = aiesim_credential::Unsigned::new(&header, &claims).unwrap();
    let signature = esim::sign_digest(&modem, &credential, &unsigned.digest())
        .await
        .unwrap();
    let expired = unsigned.sign_with(signature).into_string();
    let (status, answer) = post_with_token(&server.base_url, &expired).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("outside its validity"), "{answer}");
    drop(credentials);
    drop(esim);
    modem.shutdown().await;
}

#[tokio::test]
async fn real_model_server_error_status_carries_code_and_message() {
    let Some(server) = ModelServer::start(&["--fail-status", "503"]) else {
        return;
    };
    let cloud = HttpCloud::new(options()).unwrap();
    let Err(error) = cloud.chat(&server.base_url, &request(8)).await else {
        panic!("a 503 must fail the request")
    };
    let CloudError::Status { status, message, .. } = &error else {
        panic!("expected a status error: {error:?}")
    };
    assert_eq!(*status, 503);
    assert!(message.contains("503"), "the server's own message is kept: {message:?}");
    assert!(chain(&error).contains(&server.base_url), "{}", chain(&error));
}

#[tokio::test]
async fn real_model_stream_cut_before_done_is_an_error_after_the_deltas() {
    let Some(server) = ModelServer::start(&["--break-after", "2"]) else {
        return;
    };
    let cloud = HttpCloud::new(options()).unwrap();
    let (events, error) = collect(cloud.chat(&server.base_url, &request(16)).await.unwrap()).await;
    assert_eq!(
        events.len(),
        2,
        "both deltas sent before the cut arrive first: {events:?}"
    );
    assert!(usages(&events).is_empty());
    let error = error.expect("a cut stream is an error");
    eprintln!("cut stream: {}", chain(&error));
    assert!(matches!(error, CloudError::Truncated { .. }), "{}", chain(&error));
}

#[tokio::test]
async fn real_model_stalled_stream_hits_the_idle_timeout() {
    let Some(server) = ModelServer::start(&["--stall-after", "1"]) else {
        return;
    };
    let cloud = HttpCloud::new(HttpOptions {
        idle_timeout: Duration::from_millis(1500),
        ..options()
    })
    .unwrap();
    let (events, error) = collect(cloud.chat(&server.base_url, &request(16)).await.unwrap()).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let error = error.expect("a stalled stream is an error");
    assert!(
        matches!(error, CloudError::IdleTimeout { timeout, .. } if timeout == Duration::from_millis(1500)),
        "{error:?}"
    );
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cloud = HttpCloud::new(options()).unwrap();
    let Err(error) = cloud.chat(&format!("http://127.0.0.1:{port}/v1"), &request(8)).await else {
        panic!("nothing listens there")
    };
    assert!(matches!(error, CloudError::Connect { .. }), "{error:?}");
    let line = chain(&error);
    assert!(line.contains("refused"), "{line}");
    assert_eq!(
        line.matches(&format!("127.0.0.1:{port}")).count(),
        1,
        "the URL is said once: {line}"
    );
}

#[tokio::test]
async fn full_accept_queue_gives_a_connect_timeout() {
    // A listener that never accepts: once its queue is full the kernel drops further SYNs.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    let mut full = false;
    for _ in 0..16 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            fillers.push(s);
        } else {
            full = true;
            break;
        }
    }
    assert!(full, "the accept queue of a backlog-0 listener never filled");
    let cloud = HttpCloud::new(HttpOptions {
        connect_timeout: Duration::from_millis(400),
        ..options()
    })
    .unwrap();
    let started = Instant::now();
    let Err(error) = cloud.chat(&format!("http://{addr}/v1"), &request(8)).await else {
        panic!("cannot connect")
    };
    assert!(matches!(error, CloudError::ConnectTimeout { .. }), "{}", chain(&error));
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

/// A one-connection HTTP/1.1 server that answers with `pieces` written one by one, then keeps
/// the connection open for `hold` (or closes it at once). Returns the base URL and, when the
/// task ends, the request it received.
async fn canned(pieces: Vec<Vec<u8>>, hold: Duration) -> (String, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // Reads the head and a Content-Length body, so that closing never resets the client.
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed early");
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).into_owned();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0usize);
                if request.len() >= head_end + 4 + length {
                    break;
                }
            }
        }
        for piece in pieces {
            if conn.write_all(&piece).await.is_err() {
                break;
            }
            let _ = conn.flush().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(hold).await;
        String::from_utf8(request).unwrap()
    });
    (base_url, task)
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

fn delta(text: &str) -> String {
    format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}}}}]}}\r\n\r\n",
        serde_json::json!(text)
    )
}

#[tokio::test]
async fn body_split_at_every_byte_gives_the_same_events_and_sends_the_token() {
    let body = format!(
        ": hello\r\n\r\n{}{}{}data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":2}}}}\r\n\r\ndata: [DONE]\r\n\r\n",
        delta("Bon"),
        delta("jour 👋"),
        delta(""),
    );
    let mut pieces = vec![SSE_HEAD.to_vec()];
    pieces.extend(body.bytes().map(|b| vec![b]));
    let (url, task) = canned(pieces, Duration::ZERO).await;
    let cloud = HttpCloud::new(HttpOptions {
        credentials: Some(std::sync::Arc::new(aiesimd::cloud::StaticToken("t0ken".into()))),
        ..options()
    })
    .unwrap();
    let (events, error) = collect(cloud.chat(&url, &request(16)).await.unwrap()).await;
    assert!(error.is_none(), "{}", chain(&error.unwrap()));
    assert_eq!(
        events,
        [
            CloudEvent::Delta("Bon".into()),
            CloudEvent::Delta("jour 👋".into()),
            CloudEvent::Usage(Usage {
                prompt_tokens: 3,
                completion_tokens: 2
            }),
        ]
    );
    let sent = task.await.unwrap();
    let (head, body) = sent.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nauthorization: bearer t0ken"),
        "{head}"
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_tokens"], 16);
}

#[tokio::test]
async fn silent_server_hits_the_first_byte_timeout() {
    let (url, _task) = canned(vec![], Duration::from_secs(30)).await;
    let cloud = HttpCloud::new(HttpOptions {
        first_byte_timeout: Duration::from_millis(300),
        ..options()
    })
    .unwrap();
    let Err(error) = cloud.chat(&url, &request(8)).await else {
        panic!("no answer must fail")
    };
    assert!(matches!(error, CloudError::FirstByteTimeout { .. }), "{error:?}");

    // Headers alone do not count as the first byte of the answer.
    let (url, _task) = canned(vec![SSE_HEAD.to_vec()], Duration::from_secs(30)).await;
    let (events, error) = collect(cloud.chat(&url, &request(8)).await.unwrap()).await;
    assert!(events.is_empty());
    assert!(matches!(error, Some(CloudError::FirstByteTimeout { .. })), "{error:?}");
}

#[tokio::test]
async fn in_band_error_early_end_and_garbage_end_the_stream_after_earlier_deltas() {
    let cloud = HttpCloud::new(options()).unwrap();
    let in_band = format!(
        "{}data: {{\"error\":{{\"message\":\"model overloaded\"}}}}\n\n",
        delta("a")
    );
    let (url, _task) = canned(vec![SSE_HEAD.to_vec(), in_band.into_bytes()], Duration::ZERO).await;
    let (events, error) = collect(cloud.chat(&url, &request(8)).await.unwrap()).await;
    assert_eq!(events, [CloudEvent::Delta("a".into())]);
    assert!(
        matches!(&error, Some(CloudError::Upstream { message, .. }) if message == "model overloaded"),
        "{error:?}"
    );

    let (url, _task) = canned(vec![SSE_HEAD.to_vec(), delta("a").into_bytes()], Duration::ZERO).await;
    let (events, error) = collect(cloud.chat(&url, &request(8)).await.unwrap()).await;
    assert_eq!(events, [CloudEvent::Delta("a".into())]);
    assert!(
        matches!(error, Some(CloudError::Truncated { source: None, .. })),
        "{error:?}"
    );

    let garbage = format!("{}data: {{not json\n\n{}", delta("a"), delta("never"));
    let (url, _task) = canned(vec![SSE_HEAD.to_vec(), garbage.into_bytes()], Duration::ZERO).await;
    let (events, error) = collect(cloud.chat(&url, &request(8)).await.unwrap()).await;
    assert_eq!(events, [CloudEvent::Delta("a".into())]);
    assert!(matches!(error, Some(CloudError::MalformedChunk { .. })), "{error:?}");

    let long_line = format!("{}data: {}", delta("a"), "x".repeat(300 * 1024));
    let (url, _task) = canned(vec![SSE_HEAD.to_vec(), long_line.into_bytes()], Duration::ZERO).await;
    let (events, error) = collect(cloud.chat(&url, &request(8)).await.unwrap()).await;
    assert_eq!(events, [CloudEvent::Delta("a".into())]);
    assert!(matches!(error, Some(CloudError::MalformedStream { .. })), "{error:?}");
}

#[tokio::test]
async fn refusals_carry_status_message_and_retry_after() {
    let cloud = HttpCloud::new(options()).unwrap();
    let body = r#"{"error":{"message":"rate limited, slow down","type":"rate_limit_error"}}"#;
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 7\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (url, _task) = canned(vec![answer.into_bytes()], Duration::ZERO).await;
    let Err(error) = cloud.chat(&url, &request(8)).await else {
        panic!("a 429 must fail")
    };
    let CloudError::Status {
        status,
        message,
        retry_after,
        ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(
        (*status, message.as_str(), *retry_after),
        (429, "rate limited, slow down", Some(Duration::from_secs(7)))
    );
    assert_eq!(
        error.to_string(),
        format!("{url} answered HTTP 429: rate limited, slow down")
    );

    let json = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    let (url, _task) = canned(vec![json.as_bytes().to_vec()], Duration::ZERO).await;
    let Err(error) = cloud.chat(&url, &request(8)).await else {
        panic!("JSON is not a stream")
    };
    assert!(matches!(error, CloudError::NotEventStream { .. }), "{error:?}");
}

#[test]
fn a_ca_file_that_is_missing_or_holds_no_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = HttpCloud::new(HttpOptions {
        ca_file: Some(missing.clone()),
        ..options()
    })
    .unwrap_err();
    assert!(
        matches!(&e, CloudError::CaFileRead { path, .. } if *path == missing),
        "{e:?}"
    );
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = HttpCloud::new(HttpOptions {
        ca_file: Some(empty.clone()),
        ..options()
    })
    .unwrap_err();
    assert!(
        matches!(&e, CloudError::CaFileInvalid { path, .. } if *path == empty),
        "{e:?}"
    );
    assert!(chain(&e).contains("holds no PEM certificate"), "{}", chain(&e));
}
