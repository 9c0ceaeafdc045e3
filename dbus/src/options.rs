//! The `a{sv}` options of `Broker.Chat` and `Broker.Ask`, parsed and built in one place so the
//! daemon and apps agree on keys and types.
//!
//! `messages` is `a(ss)` (role, text) or, for messages with images, `aa{sv}`: each message
//! `{"role": s, "content": s or aa{sv}}`, each part `{"type": "text", "text": s}` or
//! `{"type": "image", "fd": h, "mime": s (optional)}`. An image's file descriptor is a regular
//! file or memfd; the daemon reads it from offset 0, sniffs its type and reads its size.

use std::{
    collections::HashMap,
    os::fd::{AsFd as _, BorrowedFd},
};

use aiesim_wire::{ChatOptions, Content, Image, ImageKind, Message, Part, Priority};
use zbus::{OwnedVariant as OwnedValue, Variant as Value};

use crate::image_fd::{memfd_with, read_image};

/// Largest accepted `temperature`.
pub const MAX_TEMPERATURE: f64 = 2.0;
/// Most messages in one request.
pub const MAX_MESSAGES: usize = 256;
/// Largest total message content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;
/// Most parts in one message.
pub const MAX_PARTS: usize = 64;

/// Bounds on the images of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// The largest one image may be, in bytes.
    pub max_image_bytes: usize,
    /// The most all images of a request may take together, in bytes.
    pub max_request_bytes: usize,
    /// The most images in one request.
    pub max_images: usize,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_image_bytes: 4 << 20,
            max_request_bytes: 8 << 20,
            max_images: 8,
        }
    }
}

/// Why a request's options were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("unknown option \"{0}\"")]
    UnknownKey(String),
    #[error("option \"{key}\" must have D-Bus type {expected}, not {got}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("option \"{0}\" is required")]
    Missing(&'static str),
    #[error("option \"{key}\" is invalid: {reason}")]
    Invalid { key: &'static str, reason: String },
}

const ROLES: [&str; 3] = ["system", "user", "assistant"];

/// [`ChatOptions`] to and from the `a{sv}` dictionaries of `Chat` and `Ask`.
pub trait ChatDict: Sized {
    /// Parses `Chat`'s request dictionary (`messages` required), reading its images.
    fn from_chat(dict: &HashMap<String, OwnedValue>, limits: &ImageLimits) -> Result<Self, OptionsError>;
    /// Parses `Ask`'s options dictionary (`messages` not allowed) and adds `prompt` as the
    /// user message, followed by the images of the `images` option.
    fn from_ask(prompt: &str, dict: &HashMap<String, OwnedValue>, limits: &ImageLimits) -> Result<Self, OptionsError>;
    /// The options as a `Chat` request dictionary; images held in memory go in memfds.
    ///
    /// # Errors
    /// A memfd for an image could not be made.
    fn to_chat_dict(&self) -> std::io::Result<HashMap<String, OwnedValue>>;
    /// As [`ChatDict::to_chat_dict`], with the images behind `images` (regular files or memfds)
    /// added after the content of the last user message.
    ///
    /// # Errors
    /// A memfd for an image could not be made, or a file descriptor duplicated.
    fn to_chat_dict_with_images(&self, images: &[BorrowedFd<'_>]) -> std::io::Result<HashMap<String, OwnedValue>>;
    /// The options without `messages`, as an `Ask` options dictionary.
    fn to_ask_dict(&self) -> HashMap<String, OwnedValue>;
}

impl ChatDict for ChatOptions {
    fn from_chat(dict: &HashMap<String, OwnedValue>, limits: &ImageLimits) -> Result<Self, OptionsError> {
        let opts = parse(dict, true, limits)?.0;
        if opts.messages.is_empty() {
            return Err(OptionsError::Missing("messages"));
        }
        Ok(opts)
    }

    fn from_ask(prompt: &str, dict: &HashMap<String, OwnedValue>, limits: &ImageLimits) -> Result<Self, OptionsError> {
        let (mut opts, images) = parse(dict, false, limits)?;
        let content = if images.is_empty() {
            Content::Text(prompt.to_owned())
        } else {
            let mut parts = vec![Part::Text(prompt.to_owned())];
            parts.extend(images.into_iter().map(Part::Image));
            Content::Parts(parts)
        };
        opts.messages = vec![Message::new("user", content)];
        check_messages(&opts)?;
        Ok(opts)
    }

    fn to_chat_dict(&self) -> std::io::Result<HashMap<String, OwnedValue>> {
        self.to_chat_dict_with_images(&[])
    }

    fn to_chat_dict_with_images(&self, images: &[BorrowedFd<'_>]) -> std::io::Result<HashMap<String, OwnedValue>> {
        let mut dict = self.to_ask_dict();
        let text_only = images.is_empty() && self.messages.iter().all(|m| m.content.as_text().is_some());
        if text_only {
            let messages: Vec<(String, String)> = self
                .messages
                .iter()
                .map(|m| (m.role.clone(), m.content.texts().collect()))
                .collect();
            dict.insert("messages".into(), owned(Value::from(messages)));
            return Ok(dict);
        }
        let last_user = self.messages.iter().rposition(|m| m.role == "user");
        let mut messages: Vec<HashMap<String, Value<'static>>> = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            let added: &[BorrowedFd<'_>] = if Some(i) == last_user { images } else { &[] };
            let content = match &m.content {
                Content::Text(t) if added.is_empty() => Value::from(t.clone()),
                content => {
                    let mut parts = Vec::new();
                    match content {
                        Content::Text(t) => parts.push(text_part(t)),
                        Content::Parts(ps) => {
                            for p in ps {
                                parts.push(match p {
                                    Part::Text(t) => text_part(t),
                                    Part::Image(image) => image_part(memfd_with(&image.data)?, Some(image.info.kind)),
                                });
                            }
                        }
                    }
                    for fd in added {
                        parts.push(image_part(fd.try_clone_to_owned()?, None));
                    }
                    Value::from(parts)
                }
            };
            messages.push(HashMap::from([
                ("role".to_owned(), Value::from(m.role.clone())),
                ("content".to_owned(), content),
            ]));
        }
        let messages = Value::from(messages)
            .try_into_owned()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        dict.insert("messages".into(), messages);
        Ok(dict)
    }

    fn to_ask_dict(&self) -> HashMap<String, OwnedValue> {
        let mut dict = HashMap::new();
        if let Some(m) = &self.model {
            dict.insert("model".into(), owned(Value::from(m.as_str())));
        }
        if let Some(n) = self.max_tokens {
            dict.insert("max_tokens".into(), owned(Value::from(n)));
        }
        if let Some(t) = self.temperature {
            dict.insert("temperature".into(), owned(Value::from(t)));
        }
        if self.priority != Priority::default() {
            dict.insert("priority".into(), owned(Value::from(self.priority.as_str())));
        }
        dict
    }
}

fn text_part(text: &str) -> HashMap<String, Value<'static>> {
    HashMap::from([
        ("type".to_owned(), Value::from("text")),
        ("text".to_owned(), Value::from(text.to_owned())),
    ])
}

fn image_part(fd: std::os::fd::OwnedFd, kind: Option<ImageKind>) -> HashMap<String, Value<'static>> {
    let mut part = HashMap::from([
        ("type".to_owned(), Value::from("image")),
        ("fd".to_owned(), Value::Fd(zbus::wire::Fd::from(fd))),
    ]);
    if let Some(kind) = kind {
        part.insert("mime".to_owned(), Value::from(kind.mime()));
    }
    part
}

/// The options, and the images of `Ask`'s `images` option.
fn parse(
    dict: &HashMap<String, OwnedValue>,
    with_messages: bool,
    limits: &ImageLimits,
) -> Result<(ChatOptions, Vec<Image>), OptionsError> {
    let mut opts = ChatOptions::default();
    let mut images = ImageReader::new(limits);
    let mut ask_images = Vec::new();
    for (key, value) in dict {
        let value: &Value<'_> = value;
        match key.as_str() {
            "messages" if with_messages => {
                opts.messages = messages(value, &mut images)?;
                check_messages(&opts)?;
            }
            "images" if !with_messages => {
                let inner = unwrap_variant(value);
                let Value::Array(fds) = inner else {
                    return Err(wrong_type("images", "ah", inner));
                };
                if fds.element_signature().to_string() != "h" {
                    return Err(wrong_type("images", "ah", inner));
                }
                for (n, fd) in fds.inner().iter().enumerate() {
                    let Value::Fd(fd) = fd else {
                        return Err(wrong_type("images", "ah", inner));
                    };
                    ask_images.push(images.read("images", &format!("image {}", n + 1), fd.as_fd(), None)?);
                }
            }
            "model" => {
                let m: String = typed(value, "model", "s")?;
                if m.is_empty() || m.len() > 256 || m.chars().any(char::is_control) {
                    return Err(OptionsError::Invalid {
                        key: "model",
                        reason: "must be 1 to 256 printable characters".into(),
                    });
                }
                opts.model = Some(m);
            }
            "max_tokens" => {
                let n: u32 = typed(value, "max_tokens", "u")?;
                if n == 0 {
                    return Err(OptionsError::Invalid {
                        key: "max_tokens",
                        reason: "must be at least 1".into(),
                    });
                }
                opts.max_tokens = Some(n);
            }
            "temperature" => {
                let t: f64 = typed(value, "temperature", "d")?;
                if !(0.0..=MAX_TEMPERATURE).contains(&t) {
                    return Err(OptionsError::Invalid {
                        key: "temperature",
                        reason: format!("must be between 0.0 and {MAX_TEMPERATURE}, not {t}"),
                    });
                }
                opts.temperature = Some(t);
            }
            "priority" => {
                let p: String = typed(value, "priority", "s")?;
                opts.priority = match p.as_str() {
                    "interactive" => Priority::Interactive,
                    "background" => Priority::Background,
                    other => {
                        return Err(OptionsError::Invalid {
                            key: "priority",
                            reason: format!("must be \"interactive\" or \"background\", not \"{other}\""),
                        });
                    }
                };
            }
            other => return Err(OptionsError::UnknownKey(other.to_owned())),
        }
    }
    Ok((opts, ask_images))
}

fn unwrap_variant<'a, 'b>(value: &'a Value<'b>) -> &'a Value<'b> {
    // Apps sometimes wrap values twice (a variant in a variant); accept one level of that.
    match value {
        Value::Variant(v) => v,
        v => v,
    }
}

fn wrong_type(key: &'static str, expected: &'static str, got: &Value<'_>) -> OptionsError {
    OptionsError::WrongType {
        key,
        expected,
        got: got.value_signature().to_string(),
    }
}

fn invalid(reason: String) -> OptionsError {
    OptionsError::Invalid {
        key: "messages",
        reason,
    }
}

/// `messages` as `a(ss)` or as `aa{sv}`.
fn messages(value: &Value<'_>, images: &mut ImageReader<'_>) -> Result<Vec<Message>, OptionsError> {
    const EXPECTED: &str = "a(ss) or aa{sv}";
    let inner = unwrap_variant(value);
    let Value::Array(list) = inner else {
        return Err(wrong_type("messages", EXPECTED, inner));
    };
    match list.element_signature().to_string().as_str() {
        "(ss)" => {
            let v: Vec<(String, String)> = typed(value, "messages", EXPECTED)?;
            Ok(v.into_iter().map(|(r, c)| Message::new(r, c)).collect())
        }
        "a{sv}" => {
            if list.len() > MAX_MESSAGES {
                return Err(invalid(format!("at most {MAX_MESSAGES} messages")));
            }
            list.inner()
                .iter()
                .enumerate()
                .map(|(i, m)| message(i + 1, m, images))
                .collect()
        }
        _ => Err(wrong_type("messages", EXPECTED, inner)),
    }
}

/// The entries of an `a{sv}` as (key, value) with the value's variant unwrapped.
fn entries<'a, 'b>(dict: &'a Value<'b>) -> Vec<(&'a str, &'a Value<'b>)> {
    let Value::Dict(d) = dict else { return Vec::new() };
    d.iter()
        .filter_map(|(k, v)| match k {
            Value::Str(k) => Some((k.as_str(), unwrap_variant(v))),
            _ => None,
        })
        .collect()
}

fn message(n: usize, value: &Value<'_>, images: &mut ImageReader<'_>) -> Result<Message, OptionsError> {
    let (mut role, mut content) = (None, None);
    for (key, v) in entries(value) {
        match (key, v) {
            ("role", Value::Str(r)) => role = Some(r.as_str().to_owned()),
            ("content", Value::Str(t)) => content = Some(Content::Text(t.as_str().to_owned())),
            ("content", Value::Array(parts)) if parts.element_signature().to_string() == "a{sv}" => {
                if parts.len() > MAX_PARTS {
                    return Err(invalid(format!("message {n} has more than {MAX_PARTS} parts")));
                }
                let parts = parts
                    .inner()
                    .iter()
                    .enumerate()
                    .map(|(p, part_value)| self::part(n, p + 1, part_value, images))
                    .collect::<Result<_, _>>()?;
                content = Some(Content::Parts(parts));
            }
            ("role" | "content", v) => {
                return Err(invalid(format!(
                    "message {n}: \"{key}\" must be {}, not {}",
                    if key == "role" { "s" } else { "s or aa{sv}" },
                    v.value_signature()
                )));
            }
            (other, _) => return Err(invalid(format!("message {n}: unknown key \"{other}\""))),
        }
    }
    let role = role.ok_or_else(|| invalid(format!("message {n} has no \"role\"")))?;
    let content = content.ok_or_else(|| invalid(format!("message {n} has no \"content\"")))?;
    if content.images().next().is_some() && role != "user" {
        return Err(invalid(format!(
            "message {n}: only user messages may carry images, not {role}"
        )));
    }
    Ok(Message { role, content })
}

fn part(n: usize, p: usize, value: &Value<'_>, images: &mut ImageReader<'_>) -> Result<Part, OptionsError> {
    let at = format!("message {n} part {p}");
    let (mut kind, mut text, mut fd, mut mime) = (None, None, None, None);
    for (key, v) in entries(value) {
        match (key, v) {
            ("type", Value::Str(s)) => kind = Some(s.as_str()),
            ("text", Value::Str(s)) => text = Some(s.as_str()),
            ("fd", Value::Fd(f)) => fd = Some(f.as_fd()),
            ("mime", Value::Str(s)) => mime = Some(s.as_str()),
            ("type" | "text" | "mime" | "fd", v) => {
                return Err(invalid(format!(
                    "{at}: \"{key}\" must be {}, not {}",
                    if key == "fd" { "h" } else { "s" },
                    v.value_signature()
                )));
            }
            (other, _) => return Err(invalid(format!("{at}: unknown key \"{other}\""))),
        }
    }
    match (kind, text, fd, mime) {
        (Some("text"), Some(text), None, None) => Ok(Part::Text(text.to_owned())),
        (Some("text"), ..) => Err(invalid(format!("{at}: a text part has \"text\" (s) and nothing else"))),
        (Some("image"), None, Some(fd), mime) => Ok(Part::Image(images.read("messages", &at, fd, mime)?)),
        (Some("image"), ..) => Err(invalid(format!(
            "{at}: an image part has \"fd\" (h) and optionally \"mime\" (s), nothing else"
        ))),
        (Some(other), ..) => Err(invalid(format!(
            "{at}: type must be \"text\" or \"image\", not \"{other}\""
        ))),
        (None, ..) => Err(invalid(format!("{at} has no \"type\""))),
    }
}

/// Reads a request's images within its limits.
struct ImageReader<'a> {
    limits: &'a ImageLimits,
    count: usize,
    bytes: usize,
}

impl<'a> ImageReader<'a> {
    fn new(limits: &'a ImageLimits) -> Self {
        Self {
            limits,
            count: 0,
            bytes: 0,
        }
    }

    fn read(
        &mut self,
        key: &'static str,
        at: &str,
        fd: BorrowedFd<'_>,
        mime: Option<&str>,
    ) -> Result<Image, OptionsError> {
        let refuse = |reason: String| OptionsError::Invalid {
            key,
            reason: format!("{at}: {reason}"),
        };
        self.count += 1;
        if self.count > self.limits.max_images {
            return Err(refuse(format!(
                "a request may carry at most {} images",
                self.limits.max_images
            )));
        }
        let declared = mime
            .map(|m| {
                ImageKind::from_mime(m).ok_or_else(|| {
                    refuse(format!(
                        "mime \"{m}\" is not image/png, image/jpeg, image/webp or image/gif"
                    ))
                })
            })
            .transpose()?;
        let data = read_image(fd, self.limits.max_image_bytes).map_err(|e| refuse(e.to_string()))?;
        self.bytes += data.len();
        if self.bytes > self.limits.max_request_bytes {
            return Err(refuse(format!(
                "the request's images take more than the {} bytes allowed",
                self.limits.max_request_bytes
            )));
        }
        let image = Image::new(data).map_err(|e| refuse(e.to_string()))?;
        if declared.is_some_and(|d| d != image.info.kind) {
            return Err(refuse(format!(
                "declared {} but the data is {}",
                mime.unwrap_or_default(),
                image.info.kind
            )));
        }
        Ok(image)
    }
}

fn check_messages(opts: &ChatOptions) -> Result<(), OptionsError> {
    if opts.messages.len() > MAX_MESSAGES {
        return Err(OptionsError::Invalid {
            key: "messages",
            reason: format!("at most {MAX_MESSAGES} messages"),
        });
    }
    let mut total = 0usize;
    for m in &opts.messages {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(OptionsError::Invalid {
                key: "messages",
                reason: format!("role must be one of system, user, assistant, not \"{}\"", m.role),
            });
        }
        total += m.content.text_len();
    }
    if total > MAX_CONTENT_BYTES {
        return Err(OptionsError::Invalid {
            key: "messages",
            reason: format!("content is {total} bytes, more than {MAX_CONTENT_BYTES}"),
        });
    }
    if opts.messages.iter().all(|m| m.role != "user") {
        return Err(OptionsError::Invalid {
            key: "messages",
            reason: "needs a user message".into(),
        });
    }
    Ok(())
}

fn owned(v: Value<'_>) -> OwnedValue {
    v.try_into_owned().expect("plain values hold no file descriptors")
}

fn typed<T>(value: &Value<'_>, key: &'static str, expected: &'static str) -> Result<T, OptionsError>
where
    T: TryFrom<OwnedValue>,
{
    // Apps sometimes wrap values twice (a variant in a variant); accept one level of that.
    let inner = match value {
        Value::Variant(v) => v,
        v => v,
    };
    let wrong = || OptionsError::WrongType {
        key,
        expected,
        got: inner.value_signature().to_string(),
    };
    let owned = inner.try_to_owned().map_err(|_| wrong())?;
    T::try_from(owned).map_err(|_| wrong())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(entries: &[(&str, Value<'_>)]) -> HashMap<String, OwnedValue> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), owned(v.clone())))
            .collect()
    }

    #[test]
    fn round_trips_through_the_dictionary() {
        let opts = ChatOptions {
            messages: vec![Message::new("system", "be brief"), Message::new("user", "hi")],
            model: Some("smollm2".into()),
            max_tokens: Some(32),
            temperature: Some(0.5),
            priority: Priority::Background,
        };
        assert_eq!(
            ChatOptions::from_chat(&opts.to_chat_dict().unwrap(), &ImageLimits::default()).unwrap(),
            opts
        );
    }

    #[test]
    fn wrong_type_names_key_and_types() {
        let d = dict(&[
            ("max_tokens", Value::from("ten")),
            ("messages", Value::from(vec![("user".to_string(), "x".to_string())])),
        ]);
        let e = ChatOptions::from_chat(&d, &ImageLimits::default()).unwrap_err();
        assert_eq!(
            e,
            OptionsError::WrongType {
                key: "max_tokens",
                expected: "u",
                got: "s".into()
            }
        );
        assert_eq!(e.to_string(), "option \"max_tokens\" must have D-Bus type u, not s");
    }

    #[test]
    fn refuses_unknown_missing_and_out_of_range() {
        assert_eq!(
            ChatOptions::from_chat(&HashMap::new(), &ImageLimits::default()).unwrap_err(),
            OptionsError::Missing("messages")
        );
        let d = dict(&[("bogus", Value::from(1u32))]);
        assert_eq!(
            ChatOptions::from_ask("q", &d, &ImageLimits::default()).unwrap_err(),
            OptionsError::UnknownKey("bogus".into())
        );
        let d = dict(&[("temperature", Value::from(9.0))]);
        assert!(matches!(
            ChatOptions::from_ask("q", &d, &ImageLimits::default()),
            Err(OptionsError::Invalid { key: "temperature", .. })
        ));
        let d = dict(&[("messages", Value::from(vec![("user".to_string(), "x".to_string())]))]);
        assert_eq!(
            ChatOptions::from_ask("q", &d, &ImageLimits::default()).unwrap_err(),
            OptionsError::UnknownKey("messages".into())
        );
        let d = dict(&[("messages", Value::from(vec![("robot".to_string(), "x".to_string())]))]);
        assert!(matches!(
            ChatOptions::from_chat(&d, &ImageLimits::default()),
            Err(OptionsError::Invalid { key: "messages", .. })
        ));
        let d = dict(&[("max_tokens", Value::from(0u32))]);
        assert!(matches!(
            ChatOptions::from_ask("q", &d, &ImageLimits::default()),
            Err(OptionsError::Invalid { key: "max_tokens", .. })
        ));
    }

    #[test]
    fn accepts_a_doubly_wrapped_variant() {
        let d = dict(&[("max_tokens", Value::Variant(Box::new(Value::from(7u32))))]);
        assert_eq!(
            ChatOptions::from_ask("q", &d, &ImageLimits::default())
                .unwrap()
                .max_tokens,
            Some(7)
        );
    }

    fn image_message(text: &str, images: &[Vec<u8>]) -> Message {
        let mut parts = vec![Part::Text(text.into())];
        parts.extend(images.iter().map(|d| Part::Image(Image::new(d.clone()).unwrap())));
        Message::new("user", Content::Parts(parts))
    }

    #[test]
    fn images_round_trip_through_memfds() {
        use aiesim_wire::image::samples;
        let opts = ChatOptions {
            messages: vec![
                Message::new("system", "describe"),
                image_message("what is this?", &[samples::png(64, 48), samples::jpeg(8, 8)]),
            ],
            ..ChatOptions::default()
        };
        let dict = opts.to_chat_dict().unwrap();
        assert_eq!(dict["messages"].value_signature().to_string(), "aa{sv}");
        let back = ChatOptions::from_chat(&dict, &ImageLimits::default()).unwrap();
        assert_eq!(
            back.messages[0].content,
            Content::Text("describe".into()),
            "text stays text"
        );
        assert_eq!(back, opts);
        let text_only = ChatOptions {
            messages: vec![Message::new("user", "hi")],
            ..ChatOptions::default()
        };
        assert_eq!(
            text_only.to_chat_dict().unwrap()["messages"]
                .value_signature()
                .to_string(),
            "a(ss)"
        );
    }

    #[test]
    fn file_descriptors_join_the_last_user_message() {
        use std::io::Write as _;
        let png = aiesim_wire::image::samples::png(3, 2);
        let mut file = crate::image_fd::tests::tempfile_in_tmp("options");
        file.write_all(&png).unwrap();
        let opts = ChatOptions {
            messages: vec![
                Message::new("user", "a"),
                Message::new("assistant", "b"),
                Message::new("user", "c"),
            ],
            ..ChatOptions::default()
        };
        let dict = opts.to_chat_dict_with_images(&[file.as_fd()]).unwrap();
        let back = ChatOptions::from_chat(&dict, &ImageLimits::default()).unwrap();
        assert_eq!(back.messages[..2], opts.messages[..2]);
        assert_eq!(back.messages[2], image_message("c", &[png]));
    }

    #[test]
    fn ask_takes_images_after_the_prompt() {
        let png = aiesim_wire::image::samples::png(3, 2);
        let fd = memfd_with(&png).unwrap();
        let fds = Value::from(vec![zbus::wire::Fd::from(&fd)]);
        let d = dict(&[("images", fds)]);
        let opts = ChatOptions::from_ask("what?", &d, &ImageLimits::default()).unwrap();
        assert_eq!(opts.messages, vec![image_message("what?", &[png])]);
        let d = dict(&[("images", Value::from(vec![1u32]))]);
        assert!(matches!(
            ChatOptions::from_ask("q", &d, &ImageLimits::default()),
            Err(OptionsError::WrongType { key: "images", .. })
        ));
    }

    /// One user message with the given parts, as an app would send it.
    fn with_parts(parts: Vec<HashMap<String, Value<'static>>>) -> HashMap<String, OwnedValue> {
        let message = HashMap::from([
            ("role".to_owned(), Value::from("user")),
            ("content".to_owned(), Value::from(parts)),
        ]);
        dict(&[("messages", Value::from(vec![message]))])
    }

    fn refusal(d: &HashMap<String, OwnedValue>, limits: &ImageLimits) -> String {
        match ChatOptions::from_chat(d, limits) {
            Err(OptionsError::Invalid {
                key: "messages",
                reason,
            }) => reason,
            other => panic!("not refused for its messages: {other:?}"),
        }
    }

    #[test]
    fn bad_image_parts_are_refused_with_their_reason() {
        use aiesim_wire::image::samples;
        let limits = ImageLimits::default();
        let png = memfd_with(&samples::png(4, 4)).unwrap();
        let part = |fd: &std::os::fd::OwnedFd, mime: Option<&str>| {
            let mut p = image_part(fd.try_clone().unwrap(), None);
            if let Some(m) = mime {
                p.insert("mime".into(), Value::from(m.to_owned()));
            }
            p
        };
        assert!(ChatOptions::from_chat(&with_parts(vec![part(&png, Some("image/png"))]), &limits).is_ok());
        let reason = refusal(&with_parts(vec![part(&png, Some("image/jpeg"))]), &limits);
        assert_eq!(
            reason,
            "message 1 part 1: declared image/jpeg but the data is image/png"
        );
        let reason = refusal(&with_parts(vec![part(&png, Some("text/plain"))]), &limits);
        assert!(reason.contains("\"text/plain\" is not image/png"), "{reason}");
        let pdf = memfd_with(b"%PDF-1.7").unwrap();
        let reason = refusal(&with_parts(vec![part(&pdf, None)]), &limits);
        assert!(
            reason.starts_with("message 1 part 1: the data is not a PNG, JPEG, WebP or GIF"),
            "{reason}"
        );
        let (pipe, _w) = nix::unistd::pipe().unwrap();
        let reason = refusal(&with_parts(vec![part(&pipe, None)]), &limits);
        assert!(reason.contains("is a pipe, not a regular file or memfd"), "{reason}");
        let small = ImageLimits {
            max_image_bytes: 10,
            ..limits
        };
        let reason = refusal(&with_parts(vec![part(&png, None)]), &small);
        assert!(reason.contains("more than the 10 allowed"), "{reason}");
        let two = ImageLimits {
            max_request_bytes: 40,
            ..limits
        };
        let reason = refusal(&with_parts(vec![part(&png, None), part(&png, None)]), &two);
        assert!(reason.contains("images take more than the 40 bytes"), "{reason}");
        let one = ImageLimits {
            max_images: 1,
            ..limits
        };
        let reason = refusal(&with_parts(vec![part(&png, None), part(&png, None)]), &one);
        assert!(reason.contains("at most 1 images"), "{reason}");
        let video = HashMap::from([("type".to_owned(), Value::from("video"))]);
        assert_eq!(
            refusal(&with_parts(vec![video]), &limits),
            "message 1 part 1: type must be \"text\" or \"image\", not \"video\""
        );
        let extra = HashMap::from([
            ("type".to_owned(), Value::from("text")),
            ("text".to_owned(), Value::from("x")),
            ("fd".to_owned(), Value::from(1u32)),
        ]);
        assert_eq!(
            refusal(&with_parts(vec![extra]), &limits),
            "message 1 part 1: \"fd\" must be h, not u"
        );
        let assistant = HashMap::from([
            ("role".to_owned(), Value::from("assistant")),
            ("content".to_owned(), Value::from(vec![part(&png, None)])),
        ]);
        let user = HashMap::from([
            ("role".to_owned(), Value::from("user")),
            ("content".to_owned(), Value::from("hi")),
        ]);
        let d = dict(&[("messages", Value::from(vec![assistant, user]))]);
        assert_eq!(
            refusal(&d, &limits),
            "message 1: only user messages may carry images, not assistant"
        );
        let d = dict(&[("messages", Value::from(vec![1u32, 2]))]);
        assert!(matches!(
            ChatOptions::from_chat(&d, &limits),
            Err(OptionsError::WrongType { key: "messages", .. })
        ));
    }
}
