//! Unit tests of task spec parsing and validation.

use super::*;
use proptest::prelude::*;

#[test]
fn an_agent_task_cannot_name_command_as_its_agent() {
    let mut spec = TaskSpec::command("https://h/a", "true");
    assert!(spec.validate(&SpecLimits::default()).is_ok());
    spec.kind = TaskKind::Agent;
    spec.command = None;
    spec.prompt = Some("do it".into());
    spec.agent = Some(COMMAND_AGENT.into());
    let errs = spec.validate(&SpecLimits::default()).unwrap_err();
    assert!(errs.iter().any(|e| e.field == "agent"), "{errs:?}");
}

#[test]
fn a_model_is_held_to_the_rule_a_profile_s_is() {
    let mut spec = TaskSpec::command("https://h/a", "true");
    for (model, ok) in [("claude-sonnet-4-5", true), ("bad model!", false), ("--x", false)] {
        spec.model = Some(model.into());
        let errs = spec.validate(&SpecLimits::default()).err().unwrap_or_default();
        assert_eq!(errs.iter().any(|e| e.field == "model"), !ok, "{model}: {errs:?}");
    }
}

#[test]
fn only_plain_http_to_another_machine_sends_in_clear_text() {
    let host = RepoUrl::clear_text_host;
    assert_eq!(host("http://git.example.com/a.git"), Some("git.example.com"));
    assert_eq!(host("HTTP://git.example.com:8080/a.git"), Some("git.example.com"));
    assert_eq!(host("http://10.0.0.7/a.git"), Some("10.0.0.7"));
    assert_eq!(host("http://[fd00::7]:3000/a.git"), Some("fd00::7"));
    for here in [
        "http://127.0.0.1:3000/a.git",
        "http://127.8.9.10/a.git",
        "http://localhost/a.git",
        "http://LOCALHOST:80/a",
        "http://[::1]:3000/a.git",
        "https://git.example.com/a.git",
        "ssh://git@git.example.com/a.git",
        "git@git.example.com:a.git",
        "/srv/repos/a",
    ] {
        assert_eq!(host(here), None, "{here}");
    }
}

#[test]
fn repo_urls() {
    assert!(RepoUrl::parse("https://github.com/a/b.git", false).is_ok());
    assert!(RepoUrl::parse("ssh://git@host:22/a/b", false).is_ok());
    assert!(RepoUrl::parse("git@github.com:a/b.git", false).is_ok());
    // A password in the user part, in any syntax git reads.
    for with_password in [
        "https://x:ghp_secret@github.com/a/b.git",
        "ssh://git:ghp_secret@host:22/a/b",
        "x-access-token:ghp_secret@github.com:a/b.git",
    ] {
        let e = RepoUrl::parse(with_password, false).unwrap_err();
        assert!(
            e.message.contains("must not embed credentials"),
            "{with_password}"
        );
        assert!(!e.message.contains("ghp_secret"));
    }
    assert!(RepoUrl::parse("ext::sh -c touch% /tmp/pwned", true).is_err());
    assert!(RepoUrl::parse("ext::sh", true).is_err());
    assert!(RepoUrl::parse("--upload-pack=touch /tmp/x", true).is_err());
    assert!(RepoUrl::parse("-u", true).is_err());
    assert!(RepoUrl::parse("file:///tmp/repo", false).is_err());
    assert!(RepoUrl::parse("/tmp/repo", false).is_err());
    assert!(RepoUrl::parse("file:///tmp/repo", true).is_ok());
    assert!(RepoUrl::parse("/tmp/repo", true).is_ok());
    assert!(RepoUrl::parse("https://user:secret@github.com/a/b", false).is_err());
    assert!(RepoUrl::parse("ftp://host/x", true).is_err());
    assert!(RepoUrl::parse("https://", false).is_err());
    assert!(RepoUrl::parse("https://h/a\nb", false).is_err());
    assert!(RepoUrl::parse("", false).is_err());
    assert_eq!(
        RepoUrl::parse("https://h/a.git/", false).unwrap().lock_key(),
        "https://h/a"
    );
}

#[test]
fn branch_names_follow_git_rules() {
    for ok in ["main", "agentpool/0190", "feature/x-1", "v1.2"] {
        assert!(BranchName::parse(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "-x",
        "a..b",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[",
        "a\\b",
        "/a",
        "a/",
        "a//b",
        "a.",
        ".a",
        "a/.b",
        "a.lock",
        "a/b.lock/c",
        "a@{1}",
        "@",
        "HEAD",
        "a\u{7f}",
    ] {
        assert!(BranchName::parse(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn validation_reports_every_field() {
    let spec = TaskSpec {
        kind: TaskKind::Agent,
        repo: Some("ext::sh".into()),
        priority: 5000,
        timeout_secs: Some(0),
        ..TaskSpec::default()
    };
    let errs = spec.validate(&SpecLimits::default()).unwrap_err();
    let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["repo", "prompt", "priority", "timeout_secs"]);
}

#[test]
fn ssh_options_smuggled_as_host_or_user_are_refused() {
    for url in [
        "ssh://-oProxyCommand=touch%20/tmp/x/r",
        "ssh://git@-oProxyCommand=touch%20/tmp/x/r",
        "ssh://-git@host/r",
        "git@-oProxyCommand=x:r",
        "https://-host/r",
        "ssh://git@/r",
    ] {
        assert!(RepoUrl::parse(url, false).is_err(), "{url}");
    }
    assert!(RepoUrl::parse("ssh://git@example.com/o/r.git", false).is_ok());
    assert!(RepoUrl::parse("git@example.com:o/r.git", false).is_ok());
}

#[test]
fn bidi_and_zero_width_characters_are_refused_in_urls_and_branches() {
    for c in ['\u{202E}', '\u{2066}', '\u{200B}', '\u{FEFF}', '\u{200F}'] {
        assert!(RepoUrl::parse(&format!("https://example.com/o/r{c}.git"), false).is_err());
        assert!(BranchName::parse(&format!("feature{c}x")).is_err());
        let spec = TaskSpec {
            base_ref: Some(format!("main{c}")),
            ..TaskSpec::command("https://example.com/o/r.git", "true")
        };
        assert!(spec.validate(&SpecLimits::default()).is_err());
    }
    assert!(BranchName::parse("fonctionnalité/été").is_ok());
}

#[test]
fn a_full_ref_is_not_a_branch_name() {
    let err = BranchName::parse("refs/heads/x").unwrap_err();
    assert!(err.message.contains("without refs/"), "{err}");
    assert!(BranchName::parse("refs").is_ok());
}

#[test]
fn nul_characters_and_too_many_labels_are_refused_at_submit() {
    let mut spec = TaskSpec::command("https://example.com/o/r.git", "echo a\0b");
    spec.setup_command = Some("\0".into());
    spec.commit_message = Some("x\0".into());
    let errs = spec.validate(&SpecLimits::default()).unwrap_err();
    let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["command", "setup_command", "commit_message"]);

    let mut spec = TaskSpec::command("https://example.com/o/r.git", "true");
    spec.labels = (0..10_000).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let errs = spec.validate(&SpecLimits::default()).unwrap_err();
    assert!(errs.iter().any(|e| e.field == "labels"), "{errs:?}");
    assert!(errs.len() < 100, "the error list stays short: {}", errs.len());
    spec.labels = (0..MAX_LABELS)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    assert!(spec.validate(&SpecLimits::default()).is_ok());
}

#[test]
fn unknown_fields_are_refused() {
    let r: Result<TaskSpec, _> = serde_json::from_str(r#"{"repo":"https://h/r","prompt":"x","promtp":"y"}"#);
    assert!(r.is_err());
    let s: TaskSpec = serde_json::from_str(r#"{"repo":"https://h/r","prompt":"x"}"#).unwrap();
    assert!(s.commit && s.push);
    assert!(s.validate(&SpecLimits::default()).is_ok());
}

#[test]
fn the_wire_form_leaves_out_what_is_absent_and_reads_back_the_same() {
    let empty = serde_json::json!({"kind": "agent", "priority": 0, "commit": true, "push": true});
    let full = serde_json::json!({
        "kind": "command", "repo": "https://h/r", "project": "p", "base_ref": "main",
        "branch": "b", "prompt": "x", "command": "make", "agent": "codex", "model": "m",
        "max_turns": 3, "max_cost_usd": 1.5, "priority": 7, "timeout_secs": 60,
        "max_attempts": 2, "labels": {"gpu": "no"},
        "depends_on": ["0190e2a4-54a8-7c1e-9d4a-2b3c4d5e6f70"], "run_after": "2026-01-02T03:04:05Z",
        "idempotency_key": "k", "follow_up_of": "0190e2a4-54a8-7c1e-9d4a-2b3c4d5e6f71",
        "setup_command": "npm ci", "commit": false, "push": false, "commit_message": "msg",
        "credentials": ["c"], "checks": [{"command": "cargo test", "timeout_secs": 5}],
        "max_rounds": 2, "push_on_checks_failed": true, "profile": "eu",
        "profile_settings": {"model": "m"}
    });
    crate::wire_test::assert_wire_form::<TaskSpec>(empty, full);
    // `null` reads as absent, as a missing field does.
    let nulls: TaskSpec = serde_json::from_str(r#"{"repo":null,"checks":null}"#).unwrap();
    assert_eq!(nulls, TaskSpec::default());
}

#[test]
fn labels_parse() {
    assert_eq!(parse_label("gpu=yes").unwrap(), ("gpu".into(), "yes".into()));
    assert!(parse_label("novalue").is_err());
    assert!(parse_label("a b=c").is_err());
}

proptest! {
    #[test]
    fn repo_parse_never_panics_and_refuses_options(s in ".{0,80}") {
        if let Ok(u) = RepoUrl::parse(&s, true) {
            prop_assert!(!u.as_str().starts_with('-'));
            prop_assert!(!u.as_str().contains("::"));
        }
    }

    #[test]
    fn accepted_branches_have_no_forbidden_sequences(s in "[a-z./~^:@{ -]{0,20}") {
        if let Ok(b) = BranchName::parse(&s) {
            let b = b.as_str();
            let ok = !b.contains("..") && !b.contains("@{") && !b.starts_with('-');
            prop_assert!(ok, "accepted {:?}", b);
            prop_assert!(!b.ends_with('/') && !b.ends_with('.') && !b.contains(' '));
        }
    }
}
