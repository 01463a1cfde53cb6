//! GitHub for tests, where github.com cannot be reached: GitHub's own example webhook payloads
//! (`@octokit/webhooks-examples`), a request-validating mock server (`@stoplight/prism-cli`)
//! serving GitHub's own REST API description (`@octokit/openapi`), and behind it a small
//! recording stand-in that keeps the state agentpool's calls need (pull requests, comments)
//! and answers with GitHub's own example responses, patched with that state. As a GitHub App's
//! API it mints installation tokens of a known value for requests signed with an App JWT.
//! All three npm packages are pinned in `tools/github` and installed by `scripts/test`.

mod stand_in;

pub use stand_in::{
    Comment, GithubStandIn, INSTALLATION_ID, INSTALLATION_TOKEN, Pull, Recorded, TEST_ONLY_APP_KEY_PEM,
};
pub(crate) use stand_in::{Recorder, record};

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

/// `tools/github` in this repository.
pub fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/github")
}

fn read_json(path: &Path) -> io::Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{}: {e} (install the GitHub test tools: npm install --prefix tools/github, as scripts/test does)",
                path.display()
            ),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// GitHub's example payloads of `event` (with `action`, when given), as GitHub sends them.
pub fn webhook_examples(event: &str, action: Option<&str>) -> io::Result<Vec<Value>> {
    let index =
        read_json(&tools_dir().join("node_modules/@octokit/webhooks-examples/api.github.com/index.json"))?;
    let mut out = Vec::new();
    for e in index.as_array().into_iter().flatten() {
        if e["name"] != event {
            continue;
        }
        for p in e["examples"].as_array().into_iter().flatten() {
            if action.is_none_or(|a| p["action"] == a) {
                out.push(p.clone());
            }
        }
    }
    if out.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no GitHub example payload for {event} {action:?}"),
        ));
    }
    Ok(out)
}

/// GitHub's REST API description cut to the operations agentpool calls (`tools/github/subset.mjs`).
pub fn api_subset(dir: &Path) -> io::Result<(PathBuf, Value)> {
    let out = dir.join("github-api.json");
    let status = std::process::Command::new("node")
        .arg(tools_dir().join("subset.mjs"))
        .arg(&out)
        .status()?;
    if !status.success() {
        return Err(io::Error::other("tools/github/subset.mjs failed"));
    }
    let v = read_json(&out)?;
    Ok((out, v))
}

/// Prism in proxy mode with `--errors`: every request is validated against GitHub's
/// description before it reaches the stand-in (an invalid one gets 422 and never arrives),
/// and every answer is validated too. Killed on drop.
pub struct Prism {
    port: u16,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Prism {
    pub async fn start(spec: &Path, upstream: &str, log_dir: &Path) -> io::Result<Self> {
        // Prism takes a port number, not 0: a free one is picked, and another process may
        // bind it before prism does. Prism then exits at once; it is started again on another.
        let mut tries = 0;
        loop {
            match Self::start_once(spec, upstream, log_dir).await? {
                Ok(prism) => return Ok(prism),
                Err(log) if log.contains("EADDRINUSE") && tries < 3 => tries += 1,
                Err(log) => return Err(io::Error::other(format!("prism did not start: {log}"))),
            }
        }
    }

    /// Prism on a free port, or (inner `Err`) its log when it exited or did not say it
    /// listens within 60 s.
    async fn start_once(spec: &Path, upstream: &str, log_dir: &Path) -> io::Result<Result<Self, String>> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let log = log_dir.join("prism.log");
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(tools_dir().join("node_modules/.bin/prism"))
            .args([
                "proxy",
                "--errors",
                "--host",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .arg(spec)
            .arg(upstream)
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .kill_on_drop(true)
            .spawn()?;
        let mut prism = Self { port, child, log };
        // Ready when it says so in its log (it binds only after loading the document).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let said = std::fs::read_to_string(&prism.log)?;
            if said.contains("Prism is listening") {
                return Ok(Ok(prism));
            }
            if prism.child.try_wait()?.is_some() || tokio::time::Instant::now() > deadline {
                // Read again: the last lines may have come with the exit.
                return Ok(Err(std::fs::read_to_string(&prism.log).unwrap_or(said)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests or answers that did not match GitHub's description, as prism logged them.
    pub fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Request terminated with error") || l.contains("Violation"))
            .map(str::to_string)
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
