//! The `a{sv}` options of `Broker.Chat` and `Broker.Ask`, parsed and built in one place so the
//! daemon and apps agree on keys and types.

use std::collections::HashMap;

use aiesim_wire::{ChatOptions, Message, Priority};
use zbus::{OwnedVariant as OwnedValue, Variant as Value};

/// Largest accepted `temperature`.
pub const MAX_TEMPERATURE: f64 = 2.0;
/// Most messages in one request.
pub const MAX_MESSAGES: usize = 256;
/// Largest total message content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;

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
    /// Parses `Chat`'s request dictionary (`messages` required).
    fn from_chat(dict: &HashMap<String, OwnedValue>) -> Result<Self, OptionsError>;
    /// Parses `Ask`'s options dictionary (`messages` not allowed) and adds `prompt` as the
    /// user message.
    fn from_ask(prompt: &str, dict: &HashMap<String, OwnedValue>) -> Result<Self, OptionsError>;
    /// The options as a `Chat` request dictionary.
    fn to_chat_dict(&self) -> HashMap<String, OwnedValue>;
    /// The options without `messages`, as an `Ask` options dictionary.
    fn to_ask_dict(&self) -> HashMap<String, OwnedValue>;
}

impl ChatDict for ChatOptions {
    fn from_chat(dict: &HashMap<String, OwnedValue>) -> Result<Self, OptionsError> {
        let opts = parse(dict, true)?;
        if opts.messages.is_empty() {
            return Err(OptionsError::Missing("messages"));
        }
        Ok(opts)
    }

    fn from_ask(prompt: &str, dict: &HashMap<String, OwnedValue>) -> Result<Self, OptionsError> {
        let mut opts = parse(dict, false)?;
        opts.messages = vec![Message::new("user", prompt)];
        check_messages(&opts)?;
        Ok(opts)
    }

    fn to_chat_dict(&self) -> HashMap<String, OwnedValue> {
        let mut dict = self.to_ask_dict();
        let messages: Vec<(String, String)> = self
            .messages
            .iter()
            .map(|m| (m.role.clone(), m.content.clone()))
            .collect();
        dict.insert("messages".into(), owned(Value::from(messages)));
        dict
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

fn parse(dict: &HashMap<String, OwnedValue>, with_messages: bool) -> Result<ChatOptions, OptionsError> {
    let mut opts = ChatOptions::default();
    for (key, value) in dict {
        let value: &Value<'_> = value;
        match key.as_str() {
            "messages" if with_messages => {
                let v: Vec<(String, String)> = typed(value, "messages", "a(ss)")?;
                opts.messages = v.into_iter().map(|(r, c)| Message::new(r, c)).collect();
                check_messages(&opts)?;
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
    Ok(opts)
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
        total += m.content.len();
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
        assert_eq!(ChatOptions::from_chat(&opts.to_chat_dict()).unwrap(), opts);
    }

    #[test]
    fn wrong_type_names_key_and_types() {
        let d = dict(&[
            ("max_tokens", Value::from("ten")),
            ("messages", Value::from(vec![("user".to_string(), "x".to_string())])),
        ]);
        let e = ChatOptions::from_chat(&d).unwrap_err();
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
            ChatOptions::from_chat(&HashMap::new()).unwrap_err(),
            OptionsError::Missing("messages")
        );
        let d = dict(&[("bogus", Value::from(1u32))]);
        assert_eq!(
            ChatOptions::from_ask("q", &d).unwrap_err(),
            OptionsError::UnknownKey("bogus".into())
        );
        let d = dict(&[("temperature", Value::from(9.0))]);
        assert!(matches!(
            ChatOptions::from_ask("q", &d),
            Err(OptionsError::Invalid { key: "temperature", .. })
        ));
        let d = dict(&[("messages", Value::from(vec![("user".to_string(), "x".to_string())]))]);
        assert_eq!(
            ChatOptions::from_ask("q", &d).unwrap_err(),
            OptionsError::UnknownKey("messages".into())
        );
        let d = dict(&[("messages", Value::from(vec![("robot".to_string(), "x".to_string())]))]);
        assert!(matches!(
            ChatOptions::from_chat(&d),
            Err(OptionsError::Invalid { key: "messages", .. })
        ));
        let d = dict(&[("max_tokens", Value::from(0u32))]);
        assert!(matches!(
            ChatOptions::from_ask("q", &d),
            Err(OptionsError::Invalid { key: "max_tokens", .. })
        ));
    }

    #[test]
    fn accepts_a_doubly_wrapped_variant() {
        let d = dict(&[("max_tokens", Value::Variant(Box::new(Value::from(7u32))))]);
        assert_eq!(ChatOptions::from_ask("q", &d).unwrap().max_tokens, Some(7));
    }
}
