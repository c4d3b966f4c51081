//! The certificates of the TLS peers' chains (`nginx-2hop-tls`, `haproxy-2hop-tls`): a root and two
//! leaves, all P-256 as the mesh's own, made with Debian's `openssl` in the run's work directory. The
//! server leaf names [`TLS_SERVER_NAME`] (the name the client side verifies); the client leaf is what the
//! server side requires. Weft's sidecars get theirs from weftd's CA instead.

use super::targets::TLS_SERVER_NAME;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `openssl` could not be started.
    #[error("cannot run openssl (apt-get install openssl): {0}")]
    Spawn(#[source] std::io::Error),
    /// `openssl` failed.
    #[error("openssl {what} failed: {stderr}")]
    Failed {
        /// Which step.
        what: String,
        /// What it printed.
        stderr: String,
    },
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The files [`make`] writes.
#[derive(Debug, Clone)]
pub struct Files {
    /// The root (PEM).
    pub ca: PathBuf,
    /// The server leaf (PEM).
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// Leaf and key in one file (HAProxy's `crt`).
    pub server_full: PathBuf,
    /// The client leaf (PEM).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// Leaf and key in one file (HAProxy's `crt`).
    pub client_full: PathBuf,
}

fn openssl(what: &str, args: &[&str]) -> Result<(), Error> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(Error::Spawn)?;
    if !out.status.success() {
        return Err(Error::Failed {
            what: what.into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::File {
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::File {
        path: path.to_path_buf(),
        source,
    })
}

/// Makes the root and the two leaves in `dir` (created if missing), valid for two days.
pub fn make(dir: &Path) -> Result<Files, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::File {
        path: dir.to_path_buf(),
        source,
    })?;
    let p = |name: &str| dir.join(name);
    let s = |path: &Path| path.display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let (ca, ca_key) = (p("ca.pem"), p("ca-key.pem"));
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (ca_s, ca_key_s) = (s(&ca), s(&ca_key));
    args.extend([
        "-keyout",
        &ca_key_s,
        "-out",
        &ca_s,
        "-days",
        "2",
        "-subj",
        "/O=weft-bench/CN=bench root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl("req (root)", &args)?;
    let leaf = |name: &str, ext: String| -> Result<(PathBuf, PathBuf, PathBuf), Error> {
        let (cert, key, csr, extf, full) = (
            p(&format!("{name}.pem")),
            p(&format!("{name}-key.pem")),
            p(&format!("{name}.csr")),
            p(&format!("{name}.ext")),
            p(&format!("{name}-full.pem")),
        );
        write(&extf, &ext)?;
        let (cert_s, key_s, csr_s, ext_s) = (s(&cert), s(&key), s(&csr), s(&extf));
        let subj = format!("/O=weft-bench/CN={name}");
        let mut args = vec!["req", "-new"];
        args.extend(ec);
        args.extend(["-keyout", &key_s, "-out", &csr_s, "-subj", &subj]);
        openssl(&format!("req ({name})"), &args)?;
        openssl(
            &format!("x509 ({name})"),
            &[
                "x509",
                "-req",
                "-in",
                &csr_s,
                "-CA",
                &ca_s,
                "-CAkey",
                &ca_key_s,
                "-set_serial",
                if name == "server" { "2" } else { "3" },
                "-days",
                "2",
                "-out",
                &cert_s,
                "-extfile",
                &ext_s,
            ],
        )?;
        write(&full, &(read(&cert)? + &read(&key)?))?;
        Ok((cert, key, full))
    };
    let (server_cert, server_key, server_full) = leaf(
        "server",
        format!("subjectAltName=DNS:{TLS_SERVER_NAME}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"),
    )?;
    let (client_cert, client_key, client_full) = leaf(
        "client",
        "subjectAltName=DNS:client.bench\nextendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"
            .into(),
    )?;
    Ok(Files {
        ca,
        server_cert,
        server_key,
        server_full,
        client_cert,
        client_key,
        client_full,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_root_and_two_p256_leaves_that_verify() {
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("openssl missing: skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("weft-bench-tls-{}", std::process::id()));
        let f = make(&dir).expect("certificates");
        for leaf in [&f.server_cert, &f.client_cert] {
            let out = Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(&f.ca)
                .arg(leaf)
                .output()
                .expect("openssl verify");
            assert!(out.status.success(), "{out:?}");
        }
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&f.server_cert)
            .output()
            .expect("openssl x509");
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("prime256v1"), "{text}");
        assert!(text.contains("DNS:server.bench"), "{text}");
        let full = std::fs::read_to_string(&f.client_full).expect("client-full.pem");
        assert!(full.contains("BEGIN CERTIFICATE") && full.contains("PRIVATE KEY"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
