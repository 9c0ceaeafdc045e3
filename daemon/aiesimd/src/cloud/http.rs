//! The daemon's cloud: streamed chat completions over HTTP (HTTP/2 with TLS in the field) with
//! reqwest and rustls, optionally bound to the cellular interface.

use std::{
    collections::VecDeque,
    fmt,
    path::{Path, PathBuf},
    sync::Once,
    time::Duration,
};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use tokio::time::{Instant, timeout, timeout_at};

use super::{
    ChatRequest, ChatStream, Cloud, CloudError, CloudEvent, SharedCredentials, carried,
    openai::{self, Chunk},
    sse::{SseEvent, SseParser},
};

/// The longest SSE line or event accepted; a chat chunk is well under a kilobyte.
const MAX_SSE_LINE: usize = 256 * 1024;
/// How much of an error response is read for its message.
const MAX_ERROR_BODY: usize = 16 * 1024;
/// After `[DONE]`, how long and how much we read on so the connection can go back to the pool.
const DRAIN_WAIT: Duration = Duration::from_millis(250);
const DRAIN_MAX: usize = 64 * 1024;
/// HTTP/2 pings while a stream is open find a dead cellular path sooner than TCP would.
const H2_PING_INTERVAL: Duration = Duration::from_secs(15);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// How [`HttpCloud`] connects and how long it waits.
#[derive(Clone)]
pub struct HttpOptions {
    /// The network interface to bind every connection to (`SO_BINDTODEVICE`), e.g. the cellular
    /// `wwan0`; `None` follows the routing table.
    pub bind_interface: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's (an operator's private CA).
    pub ca_file: Option<PathBuf>,
    /// Bound on TCP connect (and TLS set-up, which reqwest counts in it).
    pub connect_timeout: Duration,
    /// Bound from sending the request to the first bytes of the response body.
    pub first_byte_timeout: Duration,
    /// Bound on the silence between two pieces of the body once it started.
    pub idle_timeout: Duration,
    /// How long a connection stays open after its last request: a warm connection for the
    /// next one, and no packets at all once the window has passed (every packet wakes the radio).
    pub keepalive_window: Duration,
    /// Where each request's `Authorization: Bearer …` comes from; `None` sends none.
    pub credentials: Option<SharedCredentials>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            bind_interface: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            keepalive_window: Duration::from_secs(30),
            credentials: None,
        }
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            bind_interface,
            ca_file,
            connect_timeout,
            first_byte_timeout,
            idle_timeout,
            keepalive_window,
            credentials,
        } = self;
        f.debug_struct("HttpOptions")
            .field("bind_interface", bind_interface)
            .field("ca_file", ca_file)
            .field("connect_timeout", connect_timeout)
            .field("first_byte_timeout", first_byte_timeout)
            .field("idle_timeout", idle_timeout)
            .field("keepalive_window", keepalive_window)
            .field("credentials", &credentials.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The real cloud client. Connections are pooled and reused across requests.
pub struct HttpCloud {
    client: reqwest::Client,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    credentials: Option<SharedCredentials>,
}

impl fmt::Debug for HttpCloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCloud")
            .field("connect_timeout", &self.connect_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// reqwest is built without a default crypto provider; whoever installs one first wins.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error only means another part of the process installed a provider already.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl HttpCloud {
    pub fn new(options: HttpOptions) -> Result<Self, CloudError> {
        let HttpOptions {
            bind_interface,
            ca_file,
            connect_timeout,
            first_byte_timeout,
            idle_timeout,
            keepalive_window,
            credentials,
        } = options;
        install_crypto_provider();
        // TLS 0-RTT stays off (reqwest never enables early data on TCP): a replayed POST bills twice.
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("aiesimd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(connect_timeout)
            // Unacknowledged data for longer than we would wait for a chunk means a dead path.
            .tcp_user_timeout(idle_timeout)
            // Pings only while a stream is open; an idle connection sends nothing and is closed
            // once the keep-alive window after its last request has passed.
            .http2_keep_alive_interval(H2_PING_INTERVAL)
            .http2_keep_alive_timeout(H2_PING_TIMEOUT)
            .http2_keep_alive_while_idle(false)
            .pool_idle_timeout(keepalive_window)
            // TCP keep-alive probes (reqwest sends one every 15 s by default) would wake the radio
            // for an idle connection; a dead path during a stream shows by the timeouts above.
            .tcp_keepalive(None)
            .tcp_keepalive_interval(None)
            .tcp_keepalive_retries(None)
            // A redirected POST would be re-sent, and a chat is not idempotent.
            .redirect(reqwest::redirect::Policy::none())
            // The daemon's traffic must take the cellular path, never an environment's proxy.
            .no_proxy();
        if let Some(interface) = &bind_interface {
            builder = builder.interface(interface);
        }
        if let Some(path) = &ca_file {
            builder = builder.tls_certs_merge(read_ca_file(path)?);
        }
        let client = builder.build().map_err(CloudError::Client)?;
        Ok(Self {
            client,
            connect_timeout,
            first_byte_timeout,
            idle_timeout,
            credentials,
        })
    }

    fn classify(&self, url: &str, error: reqwest::Error) -> CloudError {
        let url = url.to_owned();
        let source = error.without_url();
        if source.is_builder() {
            CloudError::Request { url, source }
        } else if source.is_connect() && is_certificate_error(&source) {
            CloudError::Certificate { url, source }
        } else if source.is_connect() && source.is_timeout() {
            CloudError::ConnectTimeout {
                url,
                timeout: self.connect_timeout,
            }
        } else if source.is_connect() {
            CloudError::Connect { url, source }
        } else {
            CloudError::Transport { url, source }
        }
    }
}

impl Cloud for HttpCloud {
    async fn chat(&self, base_url: &str, request: &ChatRequest) -> Result<ChatStream, CloudError> {
        let url = base_url.to_owned();
        let body = openai::request_body(request);
        let body_len = body.len();
        let mut builder = self
            .client
            .post(format!("{}/chat/completions", base_url.trim_end_matches('/')))
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream")
            .body(body);
        if let Some(credentials) = &self.credentials {
            let token = credentials
                .bearer(base_url)
                .await
                .map_err(|source| CloudError::Credential {
                    url: url.clone(),
                    source,
                })?;
            if let Some(token) = token {
                builder = builder.bearer_auth(token);
            }
        }
        tracing::debug!(
            url,
            model = request.model,
            max_tokens = request.max_tokens,
            "cloud request"
        );

        let started = Instant::now();
        let first_byte = started + self.first_byte_timeout;
        let response = match timeout_at(first_byte, builder.send()).await {
            Err(_) => {
                return Err(CloudError::FirstByteTimeout {
                    url,
                    timeout: self.first_byte_timeout,
                });
            }
            Ok(Err(e)) => return Err(self.classify(&url, e)),
            Ok(Ok(response)) => response,
        };
        // Answered: the body went out whole.
        carried(body_len, 0);
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let body = read_error_body(response, self.idle_timeout).await;
            let message = openai::error_message(&body);
            tracing::debug!(url, status = status.as_u16(), message, "cloud refused the request");
            return Err(CloudError::Status {
                url,
                status: status.as_u16(),
                message,
                retry_after,
            });
        }
        if let Some(kind) = response.headers().get(CONTENT_TYPE) {
            let kind = String::from_utf8_lossy(kind.as_bytes()).into_owned();
            if !kind.trim_start().to_ascii_lowercase().starts_with("text/event-stream") {
                return Err(CloudError::NotEventStream {
                    url,
                    content_type: kind,
                });
            }
        }
        tracing::debug!(
            url,
            version = ?response.version(),
            headers_ms = started.elapsed().as_millis(),
            "cloud stream started"
        );

        let reader = Reader {
            response,
            url,
            parser: SseParser::new(MAX_SSE_LINE),
            scratch: Vec::new(),
            ready: VecDeque::new(),
            first_byte: Some(first_byte),
            first_byte_timeout: self.first_byte_timeout,
            idle_timeout: self.idle_timeout,
            finished: false,
            done: false,
            started,
            deltas: 0,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            Some(reader),
            |reader| async move {
                let mut reader = reader?;
                match reader.next().await? {
                    Ok(event) => Some((Ok(event), Some(reader))),
                    Err(e) => Some((Err(e), None)),
                }
            },
        )))
    }
}

/// The certificates of a PEM bundle, at least one.
fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, CloudError> {
    let pem = std::fs::read(path).map_err(|source| CloudError::CaFileRead {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |source| CloudError::CaFileInvalid {
        path: path.to_owned(),
        source,
    };
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| invalid(Some(e)))?;
    if certs.is_empty() {
        return Err(invalid(None));
    }
    Ok(certs)
}

/// Whether rustls refused the peer's certificate somewhere in the error's chain.
fn is_certificate_error(error: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) {
            return true;
        }
        // An io::Error's source() skips the error it wraps (which may be another io::Error).
        cause = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

/// `Retry-After` in its delay-seconds form; the HTTP-date form is rare from APIs and ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Reads the start of an error body; a slow or broken body just gives a shorter message.
async fn read_error_body(mut response: reqwest::Response, wait: Duration) -> Vec<u8> {
    let mut body = Vec::new();
    let _ = timeout(wait, async {
        while let Ok(Some(chunk)) = response.chunk().await {
            carried(0, chunk.len());
            let room = MAX_ERROR_BODY - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() == MAX_ERROR_BODY {
                break;
            }
        }
    })
    .await;
    body
}

/// Turns a response body into cloud events, one body chunk at a time.
struct Reader {
    response: reqwest::Response,
    url: String,
    parser: SseParser,
    scratch: Vec<SseEvent>,
    ready: VecDeque<Result<CloudEvent, CloudError>>,
    /// The deadline for the first body bytes; `None` once they came.
    first_byte: Option<Instant>,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    /// Nothing more will be queued: `[DONE]`, an error, or the end of the body.
    finished: bool,
    /// `[DONE]` arrived.
    done: bool,
    started: Instant,
    deltas: u32,
}

impl Reader {
    /// The next event; `None` after `[DONE]`. An error is always the last item.
    async fn next(&mut self) -> Option<Result<CloudEvent, CloudError>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.finished {
                if self.done {
                    self.drain().await;
                }
                return None;
            }
            self.read().await;
        }
    }

    async fn read(&mut self) {
        let read = match self.first_byte {
            Some(deadline) => timeout_at(deadline, self.response.chunk()).await,
            None => timeout(self.idle_timeout, self.response.chunk()).await,
        };
        match read {
            Err(_) => {
                let url = self.url.clone();
                self.fail(match self.first_byte {
                    Some(_) => CloudError::FirstByteTimeout {
                        url,
                        timeout: self.first_byte_timeout,
                    },
                    None => CloudError::IdleTimeout {
                        url,
                        timeout: self.idle_timeout,
                    },
                });
            }
            Ok(Err(e)) => {
                tracing::debug!(url = self.url, deltas = self.deltas, "cloud stream broke");
                self.fail(CloudError::Truncated {
                    url: self.url.clone(),
                    source: Some(e.without_url()),
                });
            }
            Ok(Ok(None)) => {
                if let Some(event) = self.parser.finish() {
                    self.handle(&event);
                }
                if !self.finished {
                    tracing::debug!(
                        url = self.url,
                        deltas = self.deltas,
                        "cloud stream ended without [DONE]"
                    );
                    self.fail(CloudError::Truncated {
                        url: self.url.clone(),
                        source: None,
                    });
                }
            }
            Ok(Ok(Some(bytes))) => {
                if bytes.is_empty() {
                    return;
                }
                carried(0, bytes.len());
                if self.first_byte.take().is_some() {
                    tracing::debug!(
                        url = self.url,
                        first_byte_ms = self.started.elapsed().as_millis(),
                        "cloud first bytes"
                    );
                }
                let parsed = self.parser.feed(&bytes, &mut self.scratch);
                let events = std::mem::take(&mut self.scratch);
                for event in &events {
                    if self.finished {
                        break;
                    }
                    self.handle(event);
                }
                self.scratch = events;
                self.scratch.clear();
                if let Err(source) = parsed {
                    self.fail(CloudError::MalformedStream {
                        url: self.url.clone(),
                        source,
                    });
                }
            }
        }
    }

    fn handle(&mut self, event: &SseEvent) {
        match openai::decode_chunk(&event.data) {
            Ok(Chunk::Done) => {
                tracing::debug!(
                    url = self.url,
                    deltas = self.deltas,
                    total_ms = self.started.elapsed().as_millis(),
                    "cloud stream done"
                );
                self.done = true;
                self.finished = true;
            }
            Ok(Chunk::Delta { content, usage }) => {
                if let Some(text) = content {
                    self.deltas += 1;
                    self.ready.push_back(Ok(CloudEvent::Delta(text)));
                }
                if let Some(usage) = usage {
                    self.ready.push_back(Ok(CloudEvent::Usage(usage)));
                }
            }
            Ok(Chunk::Error { message }) => self.fail(CloudError::Upstream {
                url: self.url.clone(),
                message,
            }),
            Err(source) => self.fail(CloudError::MalformedChunk {
                url: self.url.clone(),
                source,
            }),
        }
    }

    /// Queues the stream's last item, unless it already ended.
    fn fail(&mut self, error: CloudError) {
        if !self.finished {
            self.finished = true;
            self.ready.push_back(Err(error));
        }
    }

    /// Reads what follows `[DONE]` (normally just the end of the body) so that the connection is
    /// reused instead of closed.
    async fn drain(&mut self) {
        let mut seen = 0;
        let _ = timeout(DRAIN_WAIT, async {
            while let Ok(Some(chunk)) = self.response.chunk().await {
                carried(0, chunk.len());
                seen += chunk.len();
                if seen > DRAIN_MAX {
                    break;
                }
            }
        })
        .await;
        self.done = false;
    }
}
