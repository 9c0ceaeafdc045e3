//! A test certificate authority, made with the openssl command line: a CA certificate and the
//! server certificates it issues, in a directory the test owns.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::output_text;

/// A CA's certificate and key (P-256), valid for two days.
pub struct TestCa {
    name: String,
    /// The CA certificate (PEM): what a client trusts.
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

impl TestCa {
    /// Makes the CA `name` in `dir` (files `name-ca.pem`, `name-ca.key`).
    pub fn create(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let cert = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca.key"));
        openssl(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-days", "2", "-subj", &format!("/CN=aiesim test CA {name}")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        )?;
        Ok(Self {
            name: name.to_owned(),
            cert,
            key,
            dir: dir.to_owned(),
        })
    }

    /// Issues a server certificate for `ips`; returns its certificate and key files.
    pub fn issue(&self, server: &str, ips: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let stem = self.dir.join(format!("{}-{server}", self.name));
        let (cert, key, csr, ext) = (
            stem.with_extension("pem"),
            stem.with_extension("key"),
            stem.with_extension("csr"),
            stem.with_extension("ext"),
        );
        let names: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
                names.join(",")
            ),
        )?;
        openssl(
            Command::new("openssl")
                .args([
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-subj", &format!("/CN={server}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
        )?;
        openssl(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&self.cert)
                .arg("-CAkey")
                .arg(&self.key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert),
        )?;
        Ok((cert, key))
    }
}

fn openssl(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().context("cannot run openssl")?;
    anyhow::ensure!(out.status.success(), "{cmd:?}: {}", output_text(&out));
    Ok(())
}
