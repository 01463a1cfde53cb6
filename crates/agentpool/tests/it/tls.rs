//! `serve --tls-cert/--tls-key` with a CA and server certificate generated here: a separate
//! `worker` and the CLI trust the CA through `--ca-cert` / `AGENTPOOL_CA_CERT` and a task
//! completes over https; a client with the wrong CA (or none) is refused with one clear line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::{Env, SpawnReaped, Up, assert_stderr_contains, git, stderr, terminate};

pub(crate) struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    other_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}

/// `serve` on https with `cert` and its `key`.
pub(crate) fn with_tls(serve: &mut std::process::Command, cert: &Path, key: &Path) {
    serve.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
}

/// `agentpool serve` of `env` on https with `cert` and its `key`.
fn serve_tls(env: &Env, cert: &Path, key: &Path) -> std::process::Command {
    let mut serve = env.serve_cmd();
    with_tls(&mut serve, cert, key);
    serve
}

pub(crate) fn pki(dir: &Path) -> Pki {
    let (ca_cert, ca_key) = ca("agentpool test CA");
    let (other, _) = ca("some other CA");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let p = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        other_ca: dir.join("other-ca.pem"),
    };
    std::fs::write(&p.ca, ca_cert.pem()).unwrap();
    std::fs::write(&p.cert, cert.pem()).unwrap();
    std::fs::write(&p.key, key.serialize_pem()).unwrap();
    std::fs::write(&p.other_ca, other.pem()).unwrap();
    p
}

#[test]
fn a_worker_completes_a_task_over_https_and_a_wrong_ca_is_refused() {
    let env = Env::new();
    let remote = env.sample_repo();
    let pki = pki(env.dir.path());
    let server = Up::spawn(serve_tls(&env, &pki.cert, &pki.key));
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);

    let mut worker = env
        .cmd()
        .args(["worker", "--server", &server.url, "--allow-local-repos"])
        .arg("--ca-cert")
        .arg(&pki.ca)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_reaped();

    let o = env
        .cmd()
        .env("AGENTPOOL_CA_CERT", &pki.ca)
        .args(["--server", &server.url, "submit", "--repo"])
        .arg(&remote)
        .args([
            "--command",
            "echo over-tls > tls.txt",
            "--branch",
            "over-tls",
            "--wait",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(git(&remote, &["show", "over-tls:tls.txt"]), "over-tls");

    // A CA that did not sign the server's certificate, or none: one line, exit code 4.
    for ca in [Some(&pki.other_ca), None] {
        let mut cmd = env.cmd();
        cmd.args(["--server", &server.url, "tasks", "list"]);
        if let Some(ca) = ca {
            cmd.arg("--ca-cert").arg(ca);
        }
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("certificate"), "{err}");
        assert!(err.contains("--ca-cert"), "{err}");
    }

    // Plain http to the https server: the line says which scheme to use.
    let plain = server.url.replacen("https://", "http://", 1);
    let o = env.run(&["--server", &plain, "tasks", "list"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_stderr_contains(&o, "use an https:// URL");

    // A missing CA file is a usage error.
    let o = env.run(&[
        "--server",
        &server.url,
        "--ca-cert",
        "/nonexistent/ca.pem",
        "tasks",
        "list",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));

    terminate(&worker);
    assert!(worker.wait().unwrap().success());
    assert!(server.stop().success());
}

/// A self-signed certificate made the way `openssl req -x509` makes one by default is a CA
/// certificate; rustls refuses it as a server's own even when it is the trusted CA. The
/// server warns of it as it starts, the client's line says so and what to do, and https to a plain server says to use http.
/// That server answers the TLS hello with a plain 400 and closes, so the client's next write
/// (its TLS alert) may meet a closed socket: the command must still end with its line and
/// exit code 4, never be killed by SIGPIPE, however the timing falls.
#[test]
fn a_ca_certificate_served_as_the_server_s_own_is_explained() {
    let env = Env::new();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (
        env.dir.path().join("self.pem"),
        env.dir.path().join("self-key.pem"),
    );
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let (server, server_log) = Up::spawn_watching_stderr(serve_tls(&env, &cert_file, &key_file));
    // The server says so as it starts (logged before its URL; the lines come on their own
    // thread, so they are waited for).
    let warning = std::iter::from_fn(|| server_log.recv_timeout(Duration::from_secs(30)).ok())
        .find(|l| l.contains("the TLS certificate is a CA certificate"))
        .expect("the server's warning");
    assert!(warning.contains("WARN"), "{warning}");
    let o = env
        .cmd()
        .args(["--server", &server.url, "--ca-cert"])
        .arg(&cert_file)
        .args(["tasks", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is a CA certificate"), "{err}");
    assert!(err.contains("CA:FALSE"), "{err}");
    assert!(server.stop().success());

    let plain = Up::spawn(env.serve_cmd());
    let tls_url = plain.url.replacen("http://", "https://", 1);
    for _ in 0..10 {
        let o = env.run(&["--server", &tls_url, "tasks", "list"]);
        assert_eq!(o.status.code(), Some(4), "{:?} {}", o.status, stderr(&o));
        assert_stderr_contains(&o, "use an http:// URL");
    }
    assert!(plain.stop().success());
}

#[test]
fn serve_refuses_an_unreadable_certificate_in_one_line() {
    let env = Env::new();
    let bogus = env.dir.path().join("not-a-cert.pem");
    std::fs::write(&bogus, "hello").unwrap();
    let o = serve_tls(&env, &bogus, &bogus).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("TLS certificate"), "{err}");
}
