//! The cloud client: OpenAI-compatible chat completions, streamed.
//!
//! `sse` and `openai` are pure codecs (bytes in, typed values out); `http` is the transport
//! the daemon uses. The broker sees only the [`Cloud`] trait, so its tests can script a cloud.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aiesim_wire::{Message, Usage};
use futures_util::Stream;

mod http;
pub mod openai;
pub mod sse;

pub use http::{HttpCloud, HttpOptions};

/// One request as sent to an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub temperature: Option<f64>,
}

/// The HTTP body bytes one request carried each way (request body out; response body in,
/// error bodies and what is drained after `[DONE]` included). The broker attributes them to
/// the request's app; the fast path's per-endpoint counts are the same traffic plus headers.
#[derive(Debug, Default)]
pub struct Carried {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

tokio::task_local! {
    /// Set by the broker around one request: the transport counts into it without the
    /// [`Cloud`] trait, and every scripted cloud, having to carry it.
    pub static CARRIED: Arc<Carried>;
}

/// Counts body bytes against the request being served, if the caller set one.
fn carried(sent: usize, received: usize) {
    let _ = CARRIED.try_with(|c| {
        c.sent.fetch_add(sent as u64, Ordering::Relaxed);
        c.received.fetch_add(received as u64, Ordering::Relaxed);
    });
}

/// What an endpoint streams back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudEvent {
    /// A piece of the answer; never empty.
    Delta(String),
    /// The endpoint's count for the whole request. Normally sent once, just before the end; an
    /// endpoint that sends several sends running totals, so the last one counts. Endpoints that do
    /// not report usage send none, which is not an error.
    Usage(Usage),
}

/// Why a chat request failed. `url` is the endpoint's base URL.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("the HTTP client could not be set up")]
    Client(#[source] reqwest::Error),
    #[error("cannot read the CA file {path}")]
    CaFileRead {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {path} holds no PEM certificate")]
    CaFileInvalid {
        path: std::path::PathBuf,
        #[source]
        source: Option<reqwest::Error>,
    },
    #[error("the request to {url} could not be built")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// TLS refused the endpoint: its certificate is not from a trusted CA, expired, or for
    /// another name. The endpoint's fault as far as routing goes, like any connect error.
    #[error("{url} presented a certificate that is not trusted")]
    Certificate {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("could not connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("no connection to {url} within {timeout:?}")]
    ConnectTimeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        /// The server's own error message, shortened.
        message: String,
        /// How long the server asked us to wait, from `Retry-After` (seconds form).
        retry_after: Option<Duration>,
    },
    #[error("{url} sent nothing within {timeout:?}")]
    FirstByteTimeout { url: String, timeout: Duration },
    #[error("the stream from {url} stalled: nothing for {timeout:?}")]
    IdleTimeout { url: String, timeout: Duration },
    #[error("the request to {url} failed before an answer came")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered with {content_type:?} instead of an event stream")]
    NotEventStream { url: String, content_type: String },
    #[error("the event stream from {url} is malformed")]
    MalformedStream {
        url: String,
        #[source]
        source: sse::SseError,
    },
    #[error("the event stream from {url} carries a malformed chunk")]
    MalformedChunk {
        url: String,
        #[source]
        source: openai::ChunkError,
    },
    #[error("could not get a credential for {url}")]
    Credential {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url} reported an error mid-stream: {message}")]
    Upstream { url: String, message: String },
    /// The body ended, or the connection broke (`source`), before `[DONE]`; deltas already
    /// delivered stand.
    #[error("the stream from {url} ended before [DONE]")]
    Truncated {
        url: String,
        #[source]
        source: Option<reqwest::Error>,
    },
}

/// Whose fault a failed request is, which decides who pays for it in health and in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The endpoint refused the request's content (too long, malformed): the caller's error.
    Request,
    /// The endpoint failed or is overloaded; it asked to be left alone for `retry_after`.
    Endpoint { retry_after: Option<Duration> },
    /// The device could not send it (no credential, a request that cannot be built).
    Device,
}

impl CloudError {
    /// Whether the endpoint said it has too much to do (429 Too Many Requests, 503).
    pub fn is_overload(&self) -> bool {
        matches!(self, Self::Status { status: 429 | 503, .. })
    }

    pub fn blame(&self) -> Blame {
        match self {
            Self::Status {
                status: 400 | 413 | 422,
                ..
            } => Blame::Request,
            Self::Status {
                status: 429 | 503,
                retry_after,
                ..
            } => Blame::Endpoint {
                retry_after: *retry_after,
            },
            Self::Client(_)
            | Self::CaFileRead { .. }
            | Self::CaFileInvalid { .. }
            | Self::Request { .. }
            | Self::Credential { .. } => Blame::Device,
            _ => Blame::Endpoint { retry_after: None },
        }
    }
}

#[cfg(test)]
impl CloudError {
    /// An HTTP error status, for scripted clouds in tests.
    pub(crate) fn test_status(status: u16, retry_after: Option<Duration>) -> Self {
        Self::Status {
            url: "http://192.0.2.1/v1".into(),
            status,
            message: format!("scripted {status}"),
            retry_after,
        }
    }

    /// A connection failure, for scripted clouds in tests.
    pub(crate) fn test_connect() -> Self {
        Self::ConnectTimeout {
            url: "http://192.0.2.1/v1".into(),
            timeout: Duration::from_secs(1),
        }
    }

    /// A stream broken after it started, for scripted clouds in tests.
    pub(crate) fn test_broken() -> Self {
        Self::Truncated {
            url: "http://192.0.2.1/v1".into(),
            source: None,
        }
    }
}

pub type ChatStream = Pin<Box<dyn Stream<Item = Result<CloudEvent, CloudError>> + Send>>;

/// What a [`Credentials`] source answers: a bearer token, none, or why it has none to give.
pub type CredentialFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<String>, Box<dyn std::error::Error + Send + Sync>>> + Send + 'a>>;

/// Where the bearer token of each request comes from (the eSIM, in the daemon).
pub trait Credentials: Send + Sync + 'static {
    /// The token for a request to the endpoint at `base_url`, or `None` to send none.
    fn bearer<'a>(&'a self, base_url: &'a str) -> CredentialFuture<'a>;
}

/// One fixed token for every request (configured by hand, or in tests).
pub struct StaticToken(pub String);

impl Credentials for StaticToken {
    fn bearer<'a>(&'a self, _base_url: &'a str) -> CredentialFuture<'a> {
        Box::pin(std::future::ready(Ok(Some(self.0.clone()))))
    }
}

/// A shared credentials source.
pub type SharedCredentials = Arc<dyn Credentials>;

/// A cloud that serves chat requests.
pub trait Cloud: Send + Sync + 'static {
    /// Starts a streamed chat on the endpoint at `base_url` (like `https://host/v1`). Resolves
    /// once the endpoint accepted the request; the stream then yields deltas and usage, and ends
    /// after `[DONE]` or with one error.
    fn chat(
        &self,
        base_url: &str,
        request: &ChatRequest,
    ) -> impl Future<Output = Result<ChatStream, CloudError>> + Send;
}
