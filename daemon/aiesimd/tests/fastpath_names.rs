//! Endpoints given by host name: resolved through the real system resolver (glibc's
//! getaddrinfo) against a hosts file the test controls, bind-mounted over /etc/hosts in a mount
//! namespace of the test's own thread (with an nsswitch.conf that asks no DNS server), and the
//! resolved addresses classified as AI by the loaded classifier.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use aiesimd::fastpath::{Classifier, DEFAULT_AI_PRIORITY, TestProgram, names};
use tokio::sync::watch;

const NAME_URL: &str = "https://ai.aiesim.test/v1";
const LITERAL_URL: &str = "http://10.9.0.1:8080/v1";
const PATIENCE: Duration = Duration::from_secs(15);
/// The follower's interval between lookups of a name.
const INTERVAL: Duration = Duration::from_secs(2);

fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    !aiesim_skip::skip("the host-name tests need root (mount namespaces, BPF)")
}

/// Runs `f` on a thread with a mount namespace of its own where /etc/hosts is `hosts` and name
/// lookups use files only; nothing changes outside that thread.
fn with_hosts_file<T: Send>(hosts: &Path, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare takes no pointers; a thread may take a mount namespace of its own.
                let ret = unsafe { libc::unshare(libc::CLONE_NEWNS) };
                assert_eq!(ret, 0, "unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
                mount(None, "/", libc::MS_REC | libc::MS_PRIVATE).expect("make the mounts private");
                let nsswitch = hosts.with_file_name("nsswitch.conf");
                std::fs::write(&nsswitch, "hosts: files\n").unwrap();
                for (file, over) in [(hosts, "/etc/hosts"), (nsswitch.as_path(), "/etc/nsswitch.conf")] {
                    mount(Some(file), over, libc::MS_BIND)
                        .unwrap_or_else(|error| panic!("bind {} over {over}: {error}", file.display()));
                }
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn mount(source: Option<&Path>, target: &str, flags: libc::c_ulong) -> std::io::Result<()> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt as _};
    let source = source.map(|path| CString::new(path.as_os_str().as_bytes()).unwrap());
    let target = CString::new(target).unwrap();
    // SAFETY: the strings are NUL-terminated and outlive the call; no filesystem data is passed.
    let ret = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Rewrites the hosts file in place: the bind mount follows the inode, not the name.
fn set_hosts(hosts: &Path, line: &str) {
    std::fs::write(hosts, format!("127.0.0.1 localhost\n{line}\n")).unwrap();
}

fn is_ai(classifier: &mut Classifier, to: Ipv4Addr, port: u16) -> bool {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    frame.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2]);
    frame.extend_from_slice(&to.octets());
    frame.extend_from_slice(&40000u16.to_be_bytes());
    frame.extend_from_slice(&port.to_be_bytes());
    frame.extend_from_slice(&[0; 16]);
    let outcome = classifier.test_run(TestProgram::Egress, &frame, 1).unwrap();
    outcome.priority == DEFAULT_AI_PRIORITY
}

#[test]
fn an_endpoint_given_by_host_name_is_resolved_classified_and_followed() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    set_hosts(&hosts, "10.77.0.5 ai.aiesim.test");
    with_hosts_file(&hosts, || {
        let urls = [NAME_URL.to_owned(), LITERAL_URL.to_owned()];
        let mut names = names::Resolver::default();
        let first = names.resolve(&urls);
        assert_eq!(
            first,
            [
                "10.9.0.1:8080".parse::<SocketAddr>().unwrap(),
                "10.77.0.5:443".parse().unwrap()
            ]
        );
        let mut classifier = Classifier::load().unwrap();
        classifier.set_ai_endpoints(&first).unwrap();
        assert!(is_ai(&mut classifier, Ipv4Addr::new(10, 77, 0, 5), 443));
        assert!(!is_ai(&mut classifier, Ipv4Addr::new(10, 77, 0, 6), 443));

        // The name moves: resolving again follows it.
        set_hosts(&hosts, "10.77.0.6 ai.aiesim.test");
        let moved = names.resolve(&urls);
        classifier.set_ai_endpoints(&moved).unwrap();
        assert!(is_ai(&mut classifier, Ipv4Addr::new(10, 77, 0, 6), 443));
        assert!(!is_ai(&mut classifier, Ipv4Addr::new(10, 77, 0, 5), 443));
        assert!(is_ai(&mut classifier, Ipv4Addr::new(10, 9, 0, 1), 8080));

        // It stops resolving: its last addresses stay, rather than AI traffic going unclassified.
        set_hosts(&hosts, "");
        assert_eq!(names.resolve(&urls), moved);
    });
}

/// The follower looks names up only as requests come (a DNS query would wake the radio): not
/// while idle, once when a request comes, not again until the interval has passed, and again
/// when the URLs change; IP literals need no request.
#[test]
fn the_follower_looks_names_up_only_when_a_request_comes_and_a_lookup_is_due() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    set_hosts(&hosts, "10.77.1.1 ai.aiesim.test");
    with_hosts_file(&hosts, || {
        // A runtime on this thread: its blocking threads start from here, in this namespace.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (urls_tx, urls) = watch::channel(vec![NAME_URL.to_owned()]);
            let (requests_tx, requests) = watch::channel(0u64);
            let (destinations_tx, mut destinations) = watch::channel(Vec::new());
            let now = destinations.clone();
            tokio::spawn(names::follow(urls, INTERVAL, requests, destinations_tx));
            let request = || requests_tx.send_modify(|n| *n += 1);
            let mut wait_for = async |addrs: &[&str]| {
                let wanted: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
                let deadline = Instant::now() + PATIENCE;
                while *destinations.borrow_and_update() != wanted {
                    assert!(
                        Instant::now() < deadline,
                        "never {addrs:?}: {:?}",
                        *destinations.borrow()
                    );
                    let _ = tokio::time::timeout(PATIENCE, destinations.changed()).await;
                }
            };
            // Idle: nothing looked up, however long.
            tokio::time::sleep(INTERVAL + INTERVAL / 5).await;
            assert!(now.borrow().is_empty(), "{:?}", *now.borrow());

            // A request: looked up.
            request();
            wait_for(&["10.77.1.1:443"]).await;
            let looked_up = Instant::now();

            // The name moves. A request within the interval looks nothing up; after it, idle,
            // nothing either; the next request does.
            set_hosts(&hosts, "10.77.1.2 ai.aiesim.test");
            // (A machine too slow to come back within the interval looks up here: that part
            // cannot be checked then, and the rest holds all the same.)
            let within = looked_up.elapsed() < INTERVAL / 2;
            request();
            tokio::time::sleep(INTERVAL + INTERVAL / 5).await;
            if within {
                assert_eq!(*now.borrow(), ["10.77.1.1:443".parse::<SocketAddr>().unwrap()]);
            }
            request();
            wait_for(&["10.77.1.2:443"]).await;

            // New URLs: the literal at once, the name it keeps from its last lookup, and a new
            // name at the next request.
            set_hosts(&hosts, "10.77.1.3 ai.aiesim.test\n10.77.1.9 other.aiesim.test");
            urls_tx
                .send(vec![
                    NAME_URL.to_owned(),
                    LITERAL_URL.to_owned(),
                    "https://other.aiesim.test/v1".to_owned(),
                ])
                .unwrap();
            wait_for(&["10.9.0.1:8080", "10.77.1.2:443"]).await;
            request();
            wait_for(&["10.9.0.1:8080", "10.77.1.3:443", "10.77.1.9:443"]).await;
        });
    });
}
