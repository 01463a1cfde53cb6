//! A relative data directory (a `--data-dir` flag, or the `./.agentpool` a project keeps) is
//! resolved against the directory `agentpool` was started in, even though git and the task run
//! elsewhere.

use crate::{Env, git, json, stderr};

/// Run a command task against a fresh sample repository with `agentpool` started in a working
/// directory of its own; `args` come before `run`.
fn run_from(env: &Env, cwd: &std::path::Path, global: &[&str]) -> serde_json::Value {
    let remote = env.sample_repo();
    let o = env
        .cmd()
        .env_remove("AGENTPOOL_DATA_DIR")
        .current_dir(cwd)
        .args(global)
        .args(["run", "--repo", remote.to_str().unwrap()])
        .args([
            "--branch",
            "work/rel",
            "--command",
            "echo hi > a.txt",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let task = json(&o);
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 1, "{task}");
    assert_eq!(git(&remote, &["show", "work/rel:a.txt"]), "hi");
    task
}

#[test]
fn a_relative_data_dir_flag_works() {
    let env = Env::new();
    let cwd = env.dir.path().join("project");
    std::fs::create_dir_all(&cwd).unwrap();
    run_from(&env, &cwd, &["--data-dir", "state/pool"]);
    assert!(
        cwd.join("state/pool/agentpool.db").is_file(),
        "the pool's data is where the flag said"
    );
}

#[test]
fn a_local_dot_agentpool_dir_works() {
    let env = Env::new();
    let cwd = env.dir.path().join("project");
    std::fs::create_dir_all(cwd.join(".agentpool")).unwrap();
    run_from(&env, &cwd, &[]);
    assert!(
        cwd.join(".agentpool/agentpool.db").is_file(),
        "./.agentpool was used"
    );
}
