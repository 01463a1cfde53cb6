//! The dashboard's browser tests: finding node, Debian's Chromium and the pinned Playwright
//! (`tools/browser`), and running one of `tools/browser`'s scripts against a live server.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The workspace's root (where `tools/` is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Chromium the scripts drive: `AGENTPOOL_CHROMIUM`, else Debian's.
pub fn chromium() -> PathBuf {
    std::env::var_os("AGENTPOOL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// `what` is missing: panics when the services are required (scripts/test, CI), else says so
/// and returns true, so that the caller skips.
pub fn missing(what: &str) -> bool {
    assert!(
        !crate::services_required(),
        "{what} is missing; run scripts/test (it installs chromium, node, tools/browser and tools/agents)"
    );
    eprintln!("skipping the browser test: {what} is missing");
    true
}

/// Whether node, Chromium and `tools/browser`'s Playwright are all here (see [`missing`] for
/// what happens when one is not).
pub fn ready() -> bool {
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let have = |here: bool, what: &str| here || !missing(what);
    have(node_ok, "node")
        && have(chromium().exists(), "chromium")
        && have(
            root().join("tools/browser/node_modules/playwright-core").exists(),
            "tools/browser/node_modules (npm install --prefix tools/browser)",
        )
}

/// Runs `tools/browser/<script>` with `env` (besides `E2E_CHROMIUM` and `E2E_SCREENSHOTS`,
/// which it sets), for at most `limit`; shows its output, asserts that it passed and said
/// "checks passed", and returns its standard output.
pub async fn run_script(script: &str, env: Vec<(&str, OsString)>, limit: Duration) -> String {
    let mut cmd = Command::new("node");
    cmd.arg(root().join("tools/browser").join(script))
        .current_dir(root().join("tools/browser"))
        .env("E2E_SCREENSHOTS", root().join("target/screenshots"))
        .env("E2E_CHROMIUM", chromium());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = tokio::task::spawn_blocking(move || cmd.output());
    let out = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("{script} finishes within {limit:?}"))
        .expect("join")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser test {script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    stdout
}
