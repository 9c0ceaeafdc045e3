//! `org.aiesim.AiEsim1.Request` objects, one per `Chat`. Only the owner may read or cancel.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio_util::sync::CancellationToken;
use zbus::{OwnedVariant, interface, message::Header, object_server::SignalEmitter};

use super::DaemonError;
use crate::{broker::Outcome, router::Route};

#[derive(Debug, Clone, Default)]
struct Snapshot {
    state: &'static str,
    endpoint: String,
    model: String,
    prompt_tokens: u32,
    completion_tokens: u32,
    charged: u64,
}

/// A request's live counters, shared by its object and its streaming task.
#[derive(Debug, Clone)]
pub struct Progress(Arc<Mutex<Snapshot>>);

impl Progress {
    /// A request in line for `route`.
    pub fn queued(route: &Route) -> Self {
        Self(Arc::new(Mutex::new(Snapshot {
            state: "queued",
            endpoint: route.endpoint.clone(),
            model: route.model.clone(),
            ..Snapshot::default()
        })))
    }

    /// Its endpoint failed before the first token: it waits in line for `route` instead.
    pub fn rerouted(&self, route: &Route) {
        let mut s = self.0.lock().expect("progress lock");
        s.state = "queued";
        s.endpoint.clone_from(&route.endpoint);
        s.model.clone_from(&route.model);
    }

    pub fn streaming(&self) {
        self.0.lock().expect("progress lock").state = "streaming";
    }

    /// Queued or streaming: not ended yet.
    pub fn is_running(&self) -> bool {
        matches!(self.0.lock().expect("progress lock").state, "queued" | "streaming")
    }

    pub fn delta(&self) {
        self.0.lock().expect("progress lock").completion_tokens += 1;
    }

    pub fn finish(&self, o: &Outcome) {
        let mut s = self.0.lock().expect("progress lock");
        s.state = o.state.as_str();
        s.endpoint.clone_from(&o.endpoint);
        s.model.clone_from(&o.model);
        s.prompt_tokens = o.usage.prompt_tokens;
        s.completion_tokens = o.usage.completion_tokens;
        s.charged = o.charged;
    }

    fn get(&self) -> Snapshot {
        self.0.lock().expect("progress lock").clone()
    }
}

pub struct RequestObject {
    pub owner: String,
    pub progress: Progress,
    pub cancel: CancellationToken,
}

impl RequestObject {
    /// The state as the caller may see it. Without a caller (`ObjectManager` listings and
    /// `InterfacesAdded`, which other peers receive too) it is blank.
    fn visible(&self, header: Option<&Header<'_>>) -> Result<Snapshot, DaemonError> {
        let Some(header) = header else {
            return Ok(Snapshot {
                state: "",
                ..Snapshot::default()
            });
        };
        if super::broker::sender_of(header)? != self.owner {
            return Err(DaemonError::Unauthorized(
                "only the app that made a request may see it".into(),
            ));
        }
        Ok(self.progress.get())
    }
}

#[interface(name = "org.aiesim.AiEsim1.Request", spawn = false)]
impl RequestObject {
    #[expect(clippy::needless_pass_by_value, reason = "zbus hands the header over by value")]
    fn cancel(&self, #[zbus(header)] header: Header<'_>) -> Result<(), DaemonError> {
        if super::broker::sender_of(&header)? != self.owner {
            return Err(DaemonError::Unauthorized(
                "only the app that made a request may cancel it".into(),
            ));
        }
        self.cancel.cancel();
        Ok(())
    }

    /// Declared for introspection; the daemon sends it to the owner only (unicast).
    #[zbus(signal)]
    async fn finished(emitter: &SignalEmitter<'_>, result: HashMap<String, OwnedVariant>) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "false"))]
    #[expect(clippy::needless_pass_by_value, reason = "zbus hands the header over by value")]
    fn state(&self, #[zbus(header)] header: Option<Header<'_>>) -> Result<String, DaemonError> {
        Ok(self.visible(header.as_ref())?.state.to_owned())
    }

    #[zbus(property(emits_changed_signal = "false"))]
    #[expect(clippy::needless_pass_by_value, reason = "zbus hands the header over by value")]
    fn endpoint(&self, #[zbus(header)] header: Option<Header<'_>>) -> Result<String, DaemonError> {
        Ok(self.visible(header.as_ref())?.endpoint)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    #[expect(clippy::needless_pass_by_value, reason = "zbus hands the header over by value")]
    fn model(&self, #[zbus(header)] header: Option<Header<'_>>) -> Result<String, DaemonError> {
        Ok(self.visible(header.as_ref())?.model)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    #[expect(clippy::needless_pass_by_value, reason = "zbus hands the header over by value")]
    fn prompt_tokens(&self, #[zbus(header)] header: Option<Header<'_>>) -> Result<u32, DaemonError> {
        Ok(self.visible(header.as_ref())?.prompt_tokens)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    #[expect(clippy::needless_pass_by_value, reason = "zbus hands the header over by value")]
    fn completion_tokens(&self, #[zbus(header)] header: Option<Header<'_>>) -> Result<u32, DaemonError> {
        Ok(self.visible(header.as_ref())?.completion_tokens)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    #[expect(clippy::needless_pass_by_value, reason = "zbus hands the header over by value")]
    fn charged(&self, #[zbus(header)] header: Option<Header<'_>>) -> Result<u64, DaemonError> {
        Ok(self.visible(header.as_ref())?.charged)
    }
}
