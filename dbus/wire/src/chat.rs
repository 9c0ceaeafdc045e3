//! A chat request's options, as the daemon's core takes them.

use crate::image::Image;

/// Scheduling class of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    #[default]
    Interactive,
    Background,
}

impl Priority {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::Background => "background",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<Content>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What a message says: text, or text and images in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Image(Image),
}

impl Content {
    /// The text, when the message is text only.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            Self::Parts(_) => None,
        }
    }

    /// The text parts, in order.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        let parts: &[Part] = match self {
            Self::Text(_) => &[],
            Self::Parts(p) => p,
        };
        self.as_text().into_iter().chain(parts.iter().filter_map(|p| match p {
            Part::Text(s) => Some(s.as_str()),
            Part::Image(_) => None,
        }))
    }

    /// The images, in order.
    pub fn images(&self) -> impl Iterator<Item = &Image> {
        let parts: &[Part] = match self {
            Self::Text(_) => &[],
            Self::Parts(p) => p,
        };
        parts.iter().filter_map(|p| match p {
            Part::Image(i) => Some(i),
            Part::Text(_) => None,
        })
    }

    /// Bytes of text, images not counted.
    pub fn text_len(&self) -> usize {
        self.texts().map(str::len).sum()
    }
}

impl From<String> for Content {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

/// A request's options, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatOptions {
    pub messages: Vec<Message>,
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub priority: Priority,
}
