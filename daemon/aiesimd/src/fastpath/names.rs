//! The AI destinations of endpoint URLs: an IP literal as it is, a host name resolved through
//! the system resolver (getaddrinfo: /etc/hosts, DNS) and resolved again periodically, since
//! cloud endpoints move between addresses.
//!
//! A DNS query over the cellular link wakes the radio, so names are looked up only while
//! requests come: when a request takes its place and the names are new or their last lookup
//! is older than the interval. An idle daemon looks nothing up; a name's first lookup runs
//! beside the first request's own (the request's packets are AI all the same when the daemon
//! marks its own sockets).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

/// How often host names are resolved again.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(300);

/// Where an endpoint URL's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Address(SocketAddr),
    Name(String, u16),
}

fn target(url: &str) -> Option<Target> {
    let url = reqwest::Url::parse(url).ok()?;
    let port = url.port_or_known_default()?;
    let host = url.host_str()?;
    Some(match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => Target::Address(SocketAddr::new(ip, port)),
        Err(_) => Target::Name(host.to_owned(), port),
    })
}

/// The addresses of the URLs whose host is an IP literal, without resolving anything.
pub fn literal_destinations(urls: &[String]) -> Vec<SocketAddr> {
    let mut addrs: Vec<_> = urls
        .iter()
        .filter_map(|url| match target(url)? {
            Target::Address(addr) => Some(addr),
            Target::Name(..) => None,
        })
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// The addresses each host name resolved to last.
#[derive(Debug, Default)]
pub struct Resolver {
    known: HashMap<(String, u16), Vec<SocketAddr>>,
}

impl Resolver {
    /// Resolves the URLs' hosts now (blocking). A name that does not resolve keeps the
    /// addresses it had last, so a passing resolver failure does not stop classification.
    pub fn resolve(&mut self, urls: &[String]) -> Vec<SocketAddr> {
        resolve(urls, &mut self.known)
    }

    /// The URLs' destinations without a lookup: IP literals, and the addresses each name had
    /// at its last lookup (none for a name never looked up).
    pub fn cached(&self, urls: &[String]) -> Vec<SocketAddr> {
        let mut addrs: Vec<_> = urls
            .iter()
            .filter_map(|url| target(url))
            .flat_map(|t| match t {
                Target::Address(addr) => vec![addr],
                Target::Name(host, port) => self.known.get(&(host, port)).cloned().unwrap_or_default(),
            })
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        addrs
    }
}

fn resolve(urls: &[String], known: &mut HashMap<(String, u16), Vec<SocketAddr>>) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    let mut seen = HashMap::new();
    for url in urls {
        match target(url) {
            Some(Target::Address(addr)) => addrs.push(addr),
            Some(Target::Name(host, port)) => {
                let key = (host, port);
                let resolved = match (key.0.as_str(), port).to_socket_addrs() {
                    Ok(resolved) => resolved.collect(),
                    Err(error) => {
                        tracing::warn!(host = %key.0, error = %error, "cannot resolve an AI endpoint's host name; keeping its last addresses");
                        known.get(&key).cloned().unwrap_or_default()
                    }
                };
                addrs.extend(&resolved);
                seen.insert(key, resolved);
            }
            None => {}
        }
    }
    *known = seen;
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// Publishes the destinations of the endpoint URLs in `urls` into `destinations`: at once what
/// needs no lookup, and host names looked up when `requests` moves (a request came) while a
/// lookup is due — the URLs changed, or the last one is `interval` old. Ends when either
/// side is gone.
pub async fn follow(
    mut urls: watch::Receiver<Vec<String>>,
    interval: Duration,
    mut requests: watch::Receiver<u64>,
    destinations: watch::Sender<Vec<SocketAddr>>,
) {
    let mut resolver = Resolver::default();
    // When the names looked up last go stale; `None`: never looked up for these URLs.
    let mut fresh_until: Option<Instant> = None;
    // Whether this round looks names up (a request came while a lookup was due).
    let mut resolve_now = false;
    loop {
        let current = urls.borrow_and_update().clone();
        let addrs = if resolve_now {
            let lookup = tokio::task::spawn_blocking(move || {
                let addrs = resolver.resolve(&current);
                (addrs, resolver)
            })
            .await;
            let Ok((addrs, still)) = lookup else { return };
            resolver = still;
            fresh_until = Some(Instant::now() + interval);
            addrs
        } else {
            resolver.cached(&current)
        };
        destinations.send_if_modified(|old| {
            let changed = *old != addrs;
            *old = addrs;
            changed
        });
        // Until the URLs change or a request comes while a lookup is due: a request within the
        // interval costs this task nothing but the wake-up.
        resolve_now = loop {
            tokio::select! {
                changed = urls.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    fresh_until = None;
                    break false;
                }
                changed = requests.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    requests.borrow_and_update();
                    if fresh_until.is_none_or(|until| Instant::now() >= until) {
                        break true;
                    }
                }
                () = destinations.closed() => return,
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_taken_as_they_are_and_names_left_for_the_resolver() {
        let urls = [
            "https://10.9.0.1/v1",
            "http://[fd00::1]:8080/v1",
            "https://ai.example.invalid/v1",
            "not a url",
            "https://10.9.0.1:443/other",
        ]
        .map(str::to_owned);
        assert_eq!(
            literal_destinations(&urls),
            [
                "10.9.0.1:443".parse::<SocketAddr>().unwrap(),
                "[fd00::1]:8080".parse().unwrap()
            ]
        );
        assert_eq!(target(&urls[2]), Some(Target::Name("ai.example.invalid".into(), 443)));
    }
}
