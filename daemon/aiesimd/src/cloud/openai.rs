//! The `OpenAI` chat-completions wire format: the request body, the streamed chunks and error
//! bodies. Pure functions, no I/O.

use aiesim_wire::{Content, Part, Usage};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::ChatRequest;

/// What one `data:` payload of a chat stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// `[DONE]`: the stream is complete.
    Done,
    /// A `chat.completion.chunk`: text for the first choice and/or the request's usage.
    Delta {
        content: Option<String>,
        usage: Option<Usage>,
    },
    /// An `{"error": …}` object sent in the stream after the response had started.
    Error { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("the chunk is not a JSON chat.completion.chunk")]
    Json(#[from] serde_json::Error),
    #[error("the chunk's usage counts do not fit in 32 bits")]
    UsageOutOfRange,
}

/// The longest upstream error text kept, in characters: enough to read, too short to flood logs.
const MAX_ERROR_CHARS: usize = 300;

/// The JSON body of a streamed chat request that asks for the final usage chunk.
pub fn request_body(request: &ChatRequest) -> Vec<u8> {
    let ChatRequest {
        model,
        messages,
        max_tokens,
        temperature,
    } = request;
    let body = Body {
        model,
        messages: messages
            .iter()
            .map(|m| WireMessage {
                role: &m.role,
                content: match &m.content {
                    Content::Text(text) => WireContent::Text(text),
                    Content::Parts(parts) => WireContent::Parts(parts.iter().map(WirePart::from).collect()),
                },
            })
            .collect(),
        max_tokens: *max_tokens,
        temperature: *temperature,
        stream: true,
        stream_options: StreamOptions { include_usage: true },
    };
    serde_json::to_vec(&body).expect("a chat request always serialises")
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    stream: bool,
    stream_options: StreamOptions,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: WireContent<'a>,
}

/// A string, or an array of parts when the message carries images.
#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts(Vec<WirePart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Serialize)]
struct ImageUrl {
    url: String,
}

impl<'a> From<&'a Part> for WirePart<'a> {
    fn from(part: &'a Part) -> Self {
        match part {
            Part::Text(text) => Self::Text { text },
            // The bytes as the app sent them, in a data URL.
            Part::Image(image) => Self::ImageUrl {
                image_url: ImageUrl {
                    url: format!(
                        "data:{};base64,{}",
                        image.info.kind.mime(),
                        base64::engine::general_purpose::STANDARD.encode(&image.data)
                    ),
                },
            },
        }
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// Decodes one SSE `data` payload of a chat stream.
pub fn decode_chunk(data: &str) -> Result<Chunk, ChunkError> {
    if data.trim() == "[DONE]" {
        return Ok(Chunk::Done);
    }
    let raw: RawChunk = serde_json::from_str(data)?;
    if let Some(error) = raw.error {
        return Ok(Chunk::Error {
            message: clean_message(&error.message()),
        });
    }
    let content = raw
        .choices
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.index == 0)
        .and_then(|c| c.delta)
        .and_then(|d| d.content)
        .filter(|s| !s.is_empty());
    let usage = raw
        .usage
        .map(|u| {
            let prompt_tokens = u32::try_from(u.prompt_tokens).map_err(|_| ChunkError::UsageOutOfRange)?;
            let completion_tokens = u32::try_from(u.completion_tokens).map_err(|_| ChunkError::UsageOutOfRange)?;
            Ok::<_, ChunkError>(Usage {
                prompt_tokens,
                completion_tokens,
            })
        })
        .transpose()?;
    Ok(Chunk::Delta { content, usage })
}

/// The human message in an error response body: the `OpenAI` `error.message` when there is one,
/// else the body itself; shortened and stripped of control characters either way.
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let message = match serde_json::from_str::<RawErrorBody>(&text) {
        Ok(RawErrorBody { error }) => error.message(),
        Err(_) => text.trim().to_owned(),
    };
    clean_message(&message)
}

/// An upstream's error text as apps may see it: one bounded line, no control characters.
fn clean_message(message: &str) -> String {
    let message = message.trim();
    if message.is_empty() {
        return "(no error message)".to_owned();
    }
    let mut clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_CHARS)
        .collect();
    if message.chars().count() > MAX_ERROR_CHARS {
        clean.push('…');
    }
    clean
}

#[derive(Deserialize)]
struct RawChunk {
    #[serde(default)]
    choices: Option<Vec<RawChoice>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    error: Option<RawError>,
}

#[derive(Deserialize)]
struct RawChoice {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    delta: Option<RawDelta>,
}

#[derive(Deserialize)]
struct RawDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct RawUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct RawErrorBody {
    error: RawError,
}

/// Providers send either `{"message": …}` or a bare string.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawError {
    Object {
        #[serde(default)]
        message: Option<String>,
    },
    Text(String),
}

impl RawError {
    fn message(self) -> String {
        match self {
            Self::Object { message } => message.unwrap_or_default(),
            Self::Text(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use aiesim_wire::Message;

    use super::*;

    #[test]
    fn request_body_asks_for_a_stream_with_usage() {
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![Message::new("system", "be brief"), Message::new("user", "hi \"there\"")],
            max_tokens: 16,
            temperature: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&request_body(&request)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "model": "m",
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi \"there\""}],
                "max_tokens": 16,
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
        let with_t = ChatRequest {
            temperature: Some(0.5),
            ..request
        };
        let v: serde_json::Value = serde_json::from_slice(&request_body(&with_t)).unwrap();
        assert_eq!(v["temperature"], 0.5);
    }

    #[test]
    fn images_go_as_data_url_parts() {
        use aiesim_wire::{Image, image::samples};
        let png = samples::png(2, 3);
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![Message::new(
                "user",
                Content::Parts(vec![
                    Part::Text("what is it?".into()),
                    Part::Image(Image::new(png.clone()).unwrap()),
                ]),
            )],
            max_tokens: 16,
            temperature: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&request_body(&request)).unwrap();
        let url = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&png)
        );
        assert_eq!(
            v["messages"],
            serde_json::json!([{"role": "user", "content": [
                {"type": "text", "text": "what is it?"},
                {"type": "image_url", "image_url": {"url": url}},
            ]}])
        );
    }

    #[test]
    fn decodes_openai_chunks() {
        let delta = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        assert_eq!(
            decode_chunk(delta).unwrap(),
            Chunk::Delta {
                content: Some("Hi".into()),
                usage: None
            }
        );
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        assert_eq!(
            decode_chunk(role).unwrap(),
            Chunk::Delta {
                content: None,
                usage: None
            }
        );
        let finish = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#;
        assert_eq!(
            decode_chunk(finish).unwrap(),
            Chunk::Delta {
                content: None,
                usage: None
            }
        );
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}"#;
        assert_eq!(
            decode_chunk(usage).unwrap(),
            Chunk::Delta {
                content: None,
                usage: Some(Usage {
                    prompt_tokens: 12,
                    completion_tokens: 8
                })
            }
        );
        // llama.cpp's server puts usage on the chunk that also finishes the choice.
        let both = r#"{"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        assert_eq!(
            decode_chunk(both).unwrap(),
            Chunk::Delta {
                content: Some("!".into()),
                usage: Some(Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2
                })
            }
        );
        let second_choice = r#"{"choices":[{"index":1,"delta":{"content":"no"}}]}"#;
        assert_eq!(
            decode_chunk(second_choice).unwrap(),
            Chunk::Delta {
                content: None,
                usage: None
            }
        );
        assert_eq!(decode_chunk("[DONE]").unwrap(), Chunk::Done);
        assert_eq!(decode_chunk(" [DONE] ").unwrap(), Chunk::Done);
    }

    #[test]
    fn in_band_errors_are_reported() {
        assert_eq!(
            decode_chunk(r#"{"error":{"message":"overloaded","type":"server_error"}}"#).unwrap(),
            Chunk::Error {
                message: "overloaded".into()
            }
        );
        assert_eq!(
            decode_chunk(r#"{"error":"boom"}"#).unwrap(),
            Chunk::Error { message: "boom".into() }
        );
        // In-band error text reaches apps, so it is bounded and made one line like HTTP bodies.
        let long = format!(r#"{{"error":"bad\nthing {}"}}"#, "x".repeat(10_000));
        let Chunk::Error { message } = decode_chunk(&long).unwrap() else {
            panic!("not an error chunk")
        };
        assert!(
            message.starts_with("bad thing x") && message.ends_with('…'),
            "{message}"
        );
        assert!(message.chars().count() <= MAX_ERROR_CHARS + 1 && !message.contains('\n'));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "{",
            "[DONE",
            "null",
            "42",
            r#"{"choices":{}}"#,
            r#"{"choices":[{"delta":{"content":5}}]}"#,
            r#"{"usage":{"prompt_tokens":-1,"completion_tokens":0}}"#,
            r#"{"usage":{"prompt_tokens":1}}"#,
        ] {
            assert!(matches!(decode_chunk(bad), Err(ChunkError::Json(_))), "{bad:?}");
        }
        assert!(matches!(
            decode_chunk(r#"{"usage":{"prompt_tokens":4294967296,"completion_tokens":0}}"#),
            Err(ChunkError::UsageOutOfRange)
        ));
    }

    #[test]
    fn error_messages_are_extracted_and_bounded() {
        assert_eq!(
            error_message(br#"{"error":{"message":"model is busy","type":"x"}}"#),
            "model is busy"
        );
        assert_eq!(error_message(b"Bad Gateway\r\n"), "Bad Gateway");
        assert_eq!(error_message(b""), "(no error message)");
        assert_eq!(error_message(b"a\x1b[31mb"), "a [31mb");
        let long = "x".repeat(1000);
        let m = error_message(long.as_bytes());
        assert_eq!(m.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(m.ends_with('…'));
    }
}
