//! A relative data directory (a `--data-dir` flag, or the `./.agentpool` a project keeps) is
//! resolved against the directory `agentpool` was started in, even though git and the task run
//! elsewhere.

use crate::{Env, git, json, stderr};

/// Run a command task against a fresh sample repository with `agentpool` started in a working
/// directory of its own; `args` come before `run`. The task, and the repository's "remote".
fn run_from(env: &Env, cwd: &std::path::Path, global: &[&str]) -> (serde_json::Value, std::path::PathBuf) {
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
    (task, remote)
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

/// The config file in the data directory gives any setting by its variable's name: a task run
/// through it gets its commit author, a bad value is refused as the flag's would be, and a key
/// that names no setting stops every command with one line naming the file.
#[test]
fn the_config_file_sets_any_flag_and_refuses_what_it_does_not_know() {
    let env = Env::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    let config = env.data_dir().join("config.json");
    std::fs::write(
        &config,
        r#"{"commit_author": "Filed Bot <filed@agentpool.test>"}"#,
    )
    .unwrap();
    let data_dir = env.data_dir().display().to_string();
    let (_, remote) = run_from(&env, env.dir.path(), &["--data-dir", &data_dir]);
    assert_eq!(
        git(&remote, &["log", "-1", "--format=%an <%ae>", "work/rel"]),
        "Filed Bot <filed@agentpool.test>"
    );

    std::fs::write(&config, r#"{"retention_days": 0}"#).unwrap();
    let o = env.run(&["up", "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "agentpool: config file {}: retention_days: invalid value '0'",
            config.display()
        )) && err.contains("--retention-days"),
        "{err}"
    );

    std::fs::write(&config, r#"{"retention_day": 3}"#).unwrap();
    let o = env.run(&["workers", "list"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "agentpool: config file {}: unknown setting \"retention_day\"",
            config.display()
        )),
        "{err}"
    );
}
