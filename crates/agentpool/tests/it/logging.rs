//! The log on stderr: text by default, one JSON object a line with `--log-format json` (or
//! `AGENTPOOL_LOG_FORMAT=json`) for a log collector, with the event's fields beside
//! `timestamp`, `level` and `message`.

use crate::{Env, assert_stderr_contains, stderr};

/// `agentpool migrate` on a fresh SQLite database (`log.db` in the environment's directory) with info logs and `extra` arguments.
pub fn migrate(env: &Env, extra: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    let db = format!("sqlite://{}?mode=rwc", env.dir.path().join("log.db").display());
    let mut c = env.cmd();
    c.env("AGENTPOOL_LOG", "info")
        .args(extra)
        .args(["migrate", "--database-url", &db]);
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    stderr(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn logs_are_json_lines_when_asked() {
    for (extra, vars) in [
        (&["--log-format", "json"][..], &[][..]),
        (&[][..], &[("AGENTPOOL_LOG_FORMAT", "json")][..]),
    ] {
        let env = Env::new();
        let o = migrate(&env, extra, vars);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let lines = json_lines(&o);
        let first = lines
            .iter()
            .find(|l| l["message"] == "database schema created")
            .unwrap_or_else(|| panic!("{lines:?}"));
        assert_eq!(first["level"], "INFO", "{first}");
        assert!(first["version"].as_i64().is_some_and(|v| v > 1), "{first}");
        assert_eq!(first["migrations"], first["version"], "{first}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(first["timestamp"].as_str().unwrap_or("")).is_ok(),
            "{first}"
        );
    }
    // Text stays the default.
    let env = Env::new();
    let o = migrate(&env, &[], &[]);
    assert_stderr_contains(&o, "database schema created version=");
}
