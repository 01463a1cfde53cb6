//! Mistakes a person makes: bad flags, an unreachable server, missing input. Each gives one
//! readable line on stderr and a distinct non-zero exit code.

use crate::{Env, stderr, stdout};

fn one_line(s: &str) -> &str {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{s}");
    lines[0]
}

#[test]
fn an_unknown_flag_is_one_line_and_exit_code_2() {
    let env = Env::new();
    let o = env.run(&["tasks", "list", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    let line = one_line(&stderr(&o)).to_string();
    assert!(line.contains("--bogus"), "{line}");
    assert!(stdout(&o).is_empty());
}

#[test]
fn an_invalid_value_names_the_flag() {
    let env = Env::new();
    let o = env.run(&["submit", "--repo", "/x", "--command", "true", "--timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    let line = one_line(&stderr(&o)).to_string();
    assert!(line.contains("--timeout") && line.contains("soon"), "{line}");
}

#[test]
fn values_out_of_range_are_refused_before_anything_runs() {
    let env = Env::new();
    for (args, says) in [
        (
            &[
                "submit",
                "--repo",
                "/x",
                "--command",
                "true",
                "--delay",
                "999999999999h",
            ][..],
            "--delay",
        ),
        (
            &[
                "submit",
                "--repo",
                "/x",
                "--command",
                "true",
                "--max-cost-usd",
                "NaN",
            ],
            "--max-cost-usd",
        ),
        (&["worker", "--concurrency", "0"], "--concurrency"),
        (&["tokens", "create", "t", "--expires-in", "0s"], "--expires-in"),
        (&["serve", "--public-url", "not a url"], "--public-url"),
        (
            &["migrate", "--database-url", "bogus://u:hunter22@db/x"],
            "--database-url",
        ),
    ] {
        let o = env.run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let line = one_line(&stderr(&o)).to_string();
        assert!(line.contains(says), "{args:?}: {line}");
        assert!(!line.contains("hunter22"), "{line}");
    }
}

#[test]
fn an_unreachable_server_is_one_line_and_exit_code_4() {
    let env = Env::new();
    // Port 9 (discard) on loopback: nothing listens there.
    let id = "01a23901-c4f9-755d-9c9c-aa7fc317e16a";
    // Followers too: a server never reached is not waited for as one that went away.
    for args in [
        &["tasks", "list"][..],
        &["tasks", "wait", id],
        &["tasks", "logs", "-f", id],
    ] {
        let mut all = vec!["--server", "http://127.0.0.1:9"];
        all.extend_from_slice(args);
        let o = env.run(&all);
        assert_eq!(o.status.code(), Some(4), "{args:?}");
        let line = one_line(&stderr(&o)).to_string();
        assert!(
            line.contains("cannot reach") && line.contains("127.0.0.1:9"),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn commands_that_need_a_server_say_how_to_start_one() {
    let env = Env::new();
    let o = env.run(&["workers", "list"]);
    assert_eq!(o.status.code(), Some(4));
    let line = one_line(&stderr(&o)).to_string();
    assert!(line.contains("agentpool up"), "{line}");
}

#[test]
fn a_task_without_prompt_or_command_is_a_usage_error() {
    let env = Env::new();
    let o = env.run(&[
        "--server",
        "http://127.0.0.1:9",
        "submit",
        "--repo",
        "https://example.com/r.git",
    ]);
    assert_eq!(o.status.code(), Some(2));
    one_line(&stderr(&o));
}

#[test]
fn help_lists_every_subcommand_and_the_exit_codes() {
    let env = Env::new();
    let o = env.run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    for sub in [
        "up",
        "serve",
        "worker",
        "migrate",
        "run",
        "submit",
        "tasks",
        "workers",
        "projects",
        "tokens",
        "demo",
        "completions",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing:\n{help}"
        );
    }
    assert!(help.contains("Exit codes"));
    assert!(help.contains("else <data dir>/config.json"), "{help}");
}

/// A subcommand's help lists its own flags first and the flags every command takes apart.
#[test]
fn a_subcommand_s_help_keeps_the_global_flags_under_their_own_heading() {
    let env = Env::new();
    let o = env.run(&["submit", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    let (own, rest) = help.split_once("\nGlobal options:\n").expect(&help);
    // The section ends at the blank line before the examples.
    let global = rest.split("\n\n").next().unwrap_or_default();
    for flag in ["--repo", "--command", "--delay", "--wait"] {
        assert!(own.contains(flag) && !global.contains(flag), "{flag}:\n{help}");
    }
    for flag in ["--server", "--token", "--data-dir", "--output", "--ca-cert"] {
        assert!(global.contains(flag) && !own.contains(flag), "{flag}:\n{help}");
    }
}

#[test]
fn completions_are_generated_for_bash() {
    let env = Env::new();
    let o = env.run(&["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("_agentpool"));
}

#[test]
fn a_log_filter_or_format_that_is_not_one_is_refused_in_one_line() {
    let env = Env::new();
    let o = crate::logging::migrate(&env, &[], &[("AGENTPOOL_LOG", "info,[")]);
    assert_eq!(o.status.code(), Some(2));
    let line = one_line(&stderr(&o)).to_string();
    assert!(
        line.contains("AGENTPOOL_LOG=\"info,[\" is not a log filter"),
        "{line}"
    );
    let o = crate::logging::migrate(&env, &["--log-format", "xml"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let line = one_line(&stderr(&o)).to_string();
    assert!(line.contains("--log-format") && line.contains("json"), "{line}");
    assert!(!env.dir.path().join("log.db").exists(), "nothing was migrated");
}
