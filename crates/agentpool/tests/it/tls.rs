//! `serve --tls-cert/--tls-key` with a CA and server certificate generated here: a separate
//! `worker` and the CLI trust the CA through `--ca-cert` / `AGENTPOOL_CA_CERT` and a task
//! completes over https; a client with the wrong CA (or none) is refused with one clear line.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::{Env, Up, git, stderr, terminate};

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
    let mut serve = env.serve_cmd();
    serve
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key);
    let server = Up::spawn(serve);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);

    let mut worker = env
        .cmd()
        .args(["worker", "--server", &server.url, "--allow-local-repos"])
        .arg("--ca-cert")
        .arg(&pki.ca)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

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

#[test]
fn serve_refuses_an_unreadable_certificate_in_one_line() {
    let env = Env::new();
    let bogus = env.dir.path().join("not-a-cert.pem");
    std::fs::write(&bogus, "hello").unwrap();
    let o = env
        .serve_cmd()
        .arg("--tls-cert")
        .arg(&bogus)
        .arg("--tls-key")
        .arg(&bogus)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("TLS certificate"), "{err}");
}
