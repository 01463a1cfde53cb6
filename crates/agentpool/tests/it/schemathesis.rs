//! OpenAPI-driven fuzzing: schemathesis (pinned, installed by `scripts/test`) runs every check
//! against a real `agentpool serve` with an admin token, on SQLite and on PostgreSQL, with a
//! fixed seed and a time budget. Any server error or answer outside the document fails.

use std::path::PathBuf;
use std::process::Command;

use crate::{Env, Up, stderr, stdout};

/// A 32-byte server key (base64), so that credential writes are served rather than 503.
const SERVER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const SEED: &str = "20261202";

fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("schemathesis"))
        .find(|p| p.is_file())
}

fn fuzz(env: &Env, db: &str) {
    let Some(bin) = schemathesis() else {
        assert!(
            !agentpool_testkit::services_required(),
            "schemathesis is not installed: run scripts/test (pip install schemathesis)"
        );
        return;
    };
    let admin = env.create_token(db, "fuzz", "admin");
    let mut serve = env.cmd();
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db])
        .env("AGENTPOOL_SERVER_KEY", SERVER_KEY);
    let server = Up::spawn(serve);
    let budget = std::env::var("AGENTPOOL_SCHEMATHESIS_SECS").unwrap_or_else(|_| "90".into());
    // Every check (enabled in tests/schemathesis.toml, which also turns a check off for the
    // few operations where the document cannot state the server's rule, and says why; a
    // `--checks` option would override those).
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let out = Command::new(bin)
        .args(["--config-file", config])
        .args(["run", &format!("{}/v1/openapi.json", server.url)])
        .args(["--seed", SEED, "--max-time", &budget])
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        // The live event stream answers until the task ends: not a request/response operation.
        .args(["--exclude-path-regex", "/events/stream$"])
        // One worker: with two, hypothesis's lambda descriptions call `ast.parse` from two
        // threads at once, which CPython 3.11 can fail with "AST constructor recursion depth
        // mismatch" — an error of the fuzzer, reported as a failure of the run.
        .args(["--request-timeout", "65", "--no-color", "--workers", "1"])
        .current_dir(env.dir.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        out.status.success(),
        "schemathesis found problems (seed {SEED}):\n{text}"
    );
    drop(server);
}

#[test]
fn schemathesis_finds_nothing_on_sqlite() {
    Env::new().on_sqlite(fuzz);
}

#[test]
fn schemathesis_finds_nothing_on_postgresql() {
    Env::new().on_postgres(fuzz);
}
