//! Which agents a worker offers: an agent is installed when its CLI is found where a run looks
//! for it and can be executed — an override naming a missing or non-executable file is not.

use std::os::unix::fs::PermissionsExt;

use agentpool_agents::{AgentConfig, Registry};

fn claude_installed(cfg: &AgentConfig) -> bool {
    Registry::builtin(cfg)
        .get("claude-code")
        .expect("claude-code is a shipped adapter")
        .installed()
}

#[test]
fn an_agent_is_installed_only_where_its_cli_can_be_executed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("claude");
    let mut cfg = AgentConfig::default();
    cfg.binaries.insert("claude-code".into(), exe.clone());
    assert!(!claude_installed(&cfg), "missing");
    std::fs::write(&exe, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(!claude_installed(&cfg), "not executable");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(claude_installed(&cfg));

    // Found in the bin dir by its executable's name, as a run finds it.
    let cfg = AgentConfig {
        bin_dir: Some(dir.path().to_path_buf()),
        ..AgentConfig::default()
    };
    assert!(claude_installed(&cfg));
}

/// Each shipped adapter says how to install its CLI, and names the package the tests pin (so a
/// renamed package is caught here, not by a user).
#[test]
fn each_agent_names_the_npm_package_its_cli_comes_in() {
    let pinned: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/agents/package.json"
    )))
    .expect("tools/agents/package.json");
    let r = Registry::builtin(&AgentConfig::default());
    for name in r.names() {
        let hint = r.get(&name).and_then(|a| a.install_hint()).unwrap_or_default();
        let package = hint.strip_prefix("npm install -g ").unwrap_or_default();
        assert!(
            pinned["dependencies"][package].is_string(),
            "{name}: {hint:?} is not a package tools/agents pins"
        );
    }
}
