//! Events on the stream socket returned by `Broker.Chat`: one JSON object per line.

use serde::{Deserialize, Serialize};

/// Token usage of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// One line of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StreamEvent {
    /// A piece of the answer.
    Delta { text: String },
    /// The answer is complete; always the last event of a successful request.
    Done {
        usage: Usage,
        /// Tokens charged to the app's budget.
        charged: u64,
        endpoint: String,
        model: String,
    },
    /// The request failed; always the last event of a failed request.
    Error {
        /// A full `org.aiesim.AiEsim1.Error.*` name.
        name: String,
        message: String,
    },
}

impl StreamEvent {
    /// The event as one line of the stream, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("stream events always serialize");
        line.push('\n');
        line
    }

    /// Parses one line of the stream (without or with its newline).
    pub fn from_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim_end_matches(['\n', '\r']))
    }

    /// Whether this event ends the stream.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Delta { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_the_documented_one() {
        let d = StreamEvent::Delta { text: "hi\n".into() };
        assert_eq!(d.to_line(), "{\"type\":\"delta\",\"text\":\"hi\\n\"}\n");
        let done = StreamEvent::Done {
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 5,
            },
            charged: 8,
            endpoint: "metro".into(),
            model: "m".into(),
        };
        let line = done.to_line();
        assert!(line.starts_with("{\"type\":\"done\""), "{line}");
        assert_eq!(StreamEvent::from_line(&line).unwrap(), done);
        assert!(done.is_final());
        assert!(!d.is_final());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(StreamEvent::from_line("{\"type\":\"bogus\"}").is_err());
        assert!(StreamEvent::from_line("not json").is_err());
    }
}
