//! One `PropertiesChanged` signal per state change: objects list their properties from a
//! state snapshot, and only those that differ from the previous snapshot are sent.

use std::{borrow::Cow, collections::HashMap};

use zbus::{Variant, fdo::Properties, names::InterfaceName, object_server::SignalEmitter};

/// A property's value, compared to find what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prop {
    S(String),
    U(u32),
    T(u64),
}

impl Prop {
    pub fn text(value: &str) -> Self {
        Self::S(value.to_owned())
    }

    fn variant(&self) -> Variant<'_> {
        match self {
            Self::S(s) => Variant::from(s.as_str()),
            Self::U(u) => Variant::from(*u),
            Self::T(t) => Variant::from(*t),
        }
    }
}

/// Signals the properties of `now` that differ from `before` (both in the same order).
pub async fn publish(
    emitter: &SignalEmitter<'_>,
    interface: &'static str,
    before: &[(&'static str, Prop)],
    now: &[(&'static str, Prop)],
) -> zbus::Result<()> {
    let changed: HashMap<&str, Variant<'_>> = now
        .iter()
        .zip(before)
        .filter(|(now, was)| now != was)
        .map(|((name, value), _)| (*name, value.variant()))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    Properties::properties_changed(
        emitter,
        InterfaceName::from_static_str_unchecked(interface),
        changed,
        Cow::Borrowed(&[]),
    )
    .await
}
