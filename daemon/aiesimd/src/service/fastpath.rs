//! `org.aiesim.AiEsim1.Fastpath` on the root object.

use std::collections::HashMap;

use zbus::{OwnedVariant, interface};

use super::DaemonError;
use crate::{broker::chain, fastpath::Fastpath};

pub struct FastpathObject {
    fastpath: Option<Fastpath>,
    interface: String,
}

impl FastpathObject {
    pub fn new(fastpath: Option<Fastpath>, interface: String) -> Self {
        Self { fastpath, interface }
    }
}

#[interface(name = "org.aiesim.AiEsim1.Fastpath", spawn = false)]
impl FastpathObject {
    fn get_statistics(&self) -> Result<HashMap<String, OwnedVariant>, DaemonError> {
        let Some(fp) = &self.fastpath else {
            return Err(DaemonError::Failed(format!(
                "the fast path is not attached to {}",
                self.interface
            )));
        };
        let s = fp.statistics().map_err(|e| DaemonError::Failed(chain(&e)))?;
        let crate::fastpath::Statistics {
            egress_packets,
            egress_bytes,
            ingress_packets,
            ingress_bytes,
            ai_packets,
            ai_bytes,
        } = s;
        Ok([
            ("egress_packets", egress_packets),
            ("egress_bytes", egress_bytes),
            ("ingress_packets", ingress_packets),
            ("ingress_bytes", ingress_bytes),
            ("ai_packets", ai_packets),
            ("ai_bytes", ai_bytes),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), OwnedVariant::from(v)))
        .collect())
    }

    #[zbus(property)]
    fn interface(&self) -> &str {
        &self.interface
    }

    #[zbus(property)]
    fn attached(&self) -> bool {
        self.fastpath.is_some()
    }
}
