//! TCP exchanges with an echo server in the peer namespace of an [`Uplink`], from processes in
//! cgroups the test chose.

#![allow(dead_code, reason = "each test uses its own part")]

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::Command,
    thread,
};

use crate::uplink::Uplink;

/// A TCP server in the peer namespace echoing every connection back until it ends.
pub fn echo_server(uplink: &Uplink, at: SocketAddr) {
    let listener = uplink.in_peer(|| TcpListener::bind(at).expect("bind in the peer namespace"));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(len) = stream.read(&mut buf) {
                    if len == 0 || stream.write_all(&buf[..len]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Runs bash in cgroup `procs`: it sends `bytes` to `to` over TCP and reads them back.
pub fn exchange_from(procs: &Path, to: SocketAddr, bytes: usize) {
    let script = format!(
        "echo $$ > {procs} && exec 3<>/dev/tcp/{ip}/{port} && head -c {bytes} /dev/zero >&3 && head -c {bytes} <&3 | wc -c",
        procs = procs.display(),
        ip = to.ip(),
        port = to.port(),
    );
    let output = Command::new("bash").args(["-c", &script]).output().expect("run bash");
    assert!(
        output.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), bytes.to_string());
}
