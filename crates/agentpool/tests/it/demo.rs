//! `agentpool demo` runs the whole pipeline offline and succeeds — with a real agent CLI when
//! the pinned ones are installed (`tools/agents`).

use std::path::PathBuf;

use crate::{Env, assert_exit, stdout};

pub fn agent_bin_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("AGENTPOOL_AGENT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/agents/node_modules/.bin")
        });
    dir.join("claude").exists().then_some(dir)
}

#[test]
fn the_demo_runs_offline_and_succeeds() {
    let env = Env::new();
    let bin = agent_bin_dir();
    if bin.is_none() && agentpool_testkit::services_required() {
        panic!("the claude CLI is not installed: run `npm install --prefix tools/agents`");
    }
    let mut cmd = env.cmd();
    cmd.arg("demo");
    match &bin {
        Some(dir) => {
            cmd.env("AGENTPOOL_AGENT_BIN_DIR", dir);
        }
        None => {
            cmd.arg("--no-agent");
        }
    }
    let o = cmd.output().unwrap();
    assert_exit(&o, 0);
    let out = stdout(&o);
    for expected in [
        "demo/changelog",
        "demo/release",
        "flaky (retried)",
        "demo finished",
    ] {
        assert!(out.contains(expected), "{expected:?} missing:\n{out}");
    }
    if bin.is_some() {
        assert!(out.contains("demo/agent") && out.contains("NOTES.md"), "{out}");
        // The agent's events are rendered for people: the tool call with its key argument,
        // its result, the assistant's text and the usage.
        assert!(out.contains("→ Bash printf"), "{out}");
        assert!(out.contains("← ok"), "{out}");
        assert!(out.contains("│ I added NOTES.md"), "{out}");
        assert!(out.contains("Σ ") && out.contains("out tokens"), "{out}");
    }
}

#[test]
fn the_demo_without_an_agent_still_runs_every_command_task() {
    let env = Env::new();
    let o = env.run(&["demo", "--no-agent"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(!out.contains("demo/agent"), "{out}");
    assert!(out.contains("Release 0.1.0"), "{out}");
}
