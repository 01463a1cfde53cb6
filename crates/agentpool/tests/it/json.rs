//! `--output json` prints valid JSON for every command, so scripts can rely on it.

use crate::{Env, Up, assert_stderr_contains, json, stderr, stdout};

#[test]
fn every_command_prints_valid_json() {
    let env = Env::new();
    let remote = env.sample_repo();
    let up = Up::start(&env, 1);
    let ap = |args: &[&str]| {
        let mut all = vec!["--server", up.url.as_str(), "--output", "json"];
        all.extend_from_slice(args);
        let o = env.run(&all);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        o
    };
    let repo = remote.to_str().unwrap();
    let submitted = json(&ap(&[
        "submit",
        "--repo",
        repo,
        "--command",
        "echo a > a.txt",
        "--wait",
    ]));
    assert_eq!(submitted["state"], "succeeded");
    assert!(submitted["result"]["commit_sha"].is_string(), "{submitted}");
    let id = submitted["id"].as_str().unwrap().to_string();

    let queued = json(&ap(&[
        "submit",
        "--repo",
        repo,
        "--command",
        "true",
        "--label",
        "pool=none",
    ]));
    assert!(queued["id"].is_string());

    let list = json(&ap(&["tasks", "list"]));
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let newest = json(&ap(&["tasks", "list", "--limit", "1"]));
    assert_eq!(newest.as_array().map(Vec::len), Some(1));
    assert_eq!(newest[0]["id"], queued["id"]);
    // For people, a list cut short by --limit says so, on stderr; one that is whole does not.
    let human = |limit: &str| env.run(&["--server", up.url.as_str(), "tasks", "list", "--limit", limit]);
    let cut = human("1");
    assert_eq!(stdout(&cut).lines().count(), 2, "a header and one task");
    assert_stderr_contains(&cut, "there are more");
    let whole = human("2");
    assert_eq!(stdout(&whole).lines().count(), 3);
    assert!(!stderr(&whole).contains("there are more"), "{}", stderr(&whole));
    let show = json(&ap(&["tasks", "show", &id]));
    assert_eq!(show["id"], id.as_str());
    assert!(show["attempts_detail"].is_array());
    let logs = json(&ap(&["tasks", "logs", &id]));
    assert!(!logs.as_array().unwrap().is_empty());
    // Following a finished task prints its events as JSON lines and ends.
    let follow = ap(&["tasks", "logs", "-f", &id]);
    for line in stdout(&follow).lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
    }
    let canceled = json(&ap(&["tasks", "cancel", queued["id"].as_str().unwrap()]));
    assert_eq!(canceled["state"], "canceled");
    let retried = json(&ap(&["tasks", "retry", queued["id"].as_str().unwrap()]));
    assert_eq!(retried["state"], "queued");

    let workers = json(&ap(&["workers", "list"]));
    let wid = workers[0]["id"].as_str().unwrap().to_string();
    let worker = json(&ap(&["workers", "show", &wid]));
    assert_eq!(worker["id"], wid.as_str());

    let drained = json(&ap(&["workers", "drain", &wid]));
    assert_eq!(drained["status"], "draining");

    json(&ap(&["projects", "put", "demo", "--repo", repo]));
    let projects = json(&ap(&["projects", "list"]));
    assert_eq!(projects[0]["name"], "demo");
    json(&ap(&["projects", "show", "demo"]));
    json(&ap(&["projects", "delete", "demo"]));

    // Create-and-build: the project (here wired to GitHub) and its build in one call.
    let built = json(&ap(&[
        "projects",
        "build",
        "web",
        "--repo",
        repo,
        "--github-repo",
        "acme/web",
        "--github-webhook-secret",
        "gh-hook",
        "--github-draft",
        "add a changelog",
    ]));
    assert_eq!(built["project"]["github"]["repository"], "acme/web");
    assert_eq!(built["project"]["github"]["draft"], true);
    assert_eq!(built["build"]["created"], true);
    assert_eq!(built["build"]["task"]["spec"]["project"], "web");
    // `projects put web` for the GitHub repository acme/web, plus `extra`.
    let put_web = |extra: &[&'static str]| {
        let mut all = vec![
            "projects",
            "put",
            "web",
            "--repo",
            repo,
            "--github-repo",
            "acme/web",
        ];
        all.extend_from_slice(extra);
        all
    };
    // The exit code of a command refused before it prints anything.
    let refused = |args: &[&str]| {
        let mut all = vec!["--server", up.url.as_str()];
        all.extend_from_slice(args);
        env.run(&all).status.code()
    };
    assert_eq!(
        refused(&put_web(&[])),
        Some(2),
        "a GitHub repository needs its webhook secret"
    );
    // Wired as a GitHub App: its id and the credential holding its key.
    let hook = ["--github-webhook-secret", "gh-hook"];
    let app = json(&ap(&put_web(
        &[
            &hook[..],
            &["--github-app-id", "123456", "--github-app-key", "gh-app-key"],
        ]
        .concat(),
    )));
    assert_eq!(
        app["github"]["app"],
        serde_json::json!({"app_id": 123456, "private_key": "gh-app-key"}),
        "{app}"
    );
    // For people, `projects show` says all of it: the checks and the GitHub wiring too.
    json(&ap(&put_web(
        &[
            &hook[..],
            &["--github-app-id", "123456", "--github-app-key", "gh-app-key"],
        ]
        .concat(),
    )
    .into_iter()
    .chain([
        "--check",
        "cargo test",
        "--check",
        "cargo clippy",
        "--max-rounds",
        "4",
    ])
    .collect::<Vec<_>>()));
    let shown = stdout(&env.run(&["--server", up.url.as_str(), "projects", "show", "web"]));
    let field = |k: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(k))
            .map(|l| l[k.len()..].trim().to_string())
    };
    assert_eq!(field("checks").as_deref(), Some("cargo test"), "{shown}");
    assert!(
        shown.contains(&format!("\n{:11}cargo clippy\n", "")),
        "the second check under the first: {shown}"
    );
    assert_eq!(field("rounds").as_deref(), Some("4"), "{shown}");
    assert_eq!(
        field("github").as_deref(),
        Some("acme/web (GitHub App 123456)"),
        "{shown}"
    );
    let both = [
        &hook[..],
        &[
            "--github-token",
            "gh-token",
            "--github-app-id",
            "1",
            "--github-app-key",
            "k",
        ],
    ]
    .concat();
    assert_eq!(refused(&put_web(&both)), Some(2), "a token or an App, not both");

    // Wired to Forgejo instead: the repository, the instance and the token's credential.
    let put_fj = |extra: &[&'static str]| {
        let mut all = vec![
            "--server",
            up.url.as_str(),
            "projects",
            "put",
            "fj",
            "--repo",
            repo,
        ];
        all.extend_from_slice(&["--forgejo-repo", "acme/web", "--forgejo-token", "fj-token"]);
        all.extend_from_slice(extra);
        env.run(&all)
    };
    let fj = json(&put_fj(&[
        "--forgejo-url",
        "https://codeberg.org",
        "--forgejo-draft",
        "--output",
        "json",
    ]));
    assert_eq!(
        fj["forgejo"],
        serde_json::json!({"repository": "acme/web", "url": "https://codeberg.org",
            "token": "fj-token", "pull_requests": true, "draft": true}),
        "{fj}"
    );
    // A build of the project as it is stored: no --repo, no project flags.
    let build = json(&ap(&["projects", "build", "fj", "add a changelog"]));
    assert_eq!(build["task"]["spec"]["project"], "fj");
    assert_eq!(build["created"], true);
    let changed = env.run(&[
        "--server",
        up.url.as_str(),
        "projects",
        "build",
        "fj",
        "--slots",
        "2",
        "x",
    ]);
    assert_eq!(changed.status.code(), Some(2));
    assert_stderr_contains(
        &changed,
        "project flags change the project, which needs --repo too",
    );
    let shown = stdout(&env.run(&["--server", up.url.as_str(), "projects", "show", "fj"]));
    assert!(
        shown.contains("acme/web on https://codeberg.org (token from credential fj-token)"),
        "{shown}"
    );
    assert_eq!(
        put_fj(&[]).status.code(),
        Some(2),
        "Forgejo needs its instance's address"
    );
    let bad = put_fj(&["--forgejo-url", "codeberg.org"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_stderr_contains(&bad, "project refused: --forgejo-url: must be an http(s) URL");
    drop(up);
}

#[test]
fn the_demo_prints_one_json_summary() {
    let env = Env::new();
    let o = env.run(&["demo", "--no-agent", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let summary = json(&o);
    let tasks = summary["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 4, "{summary}");
    assert!(
        tasks.iter().all(|t| t["task"]["state"] == "succeeded"),
        "{summary}"
    );
    assert!(summary["commits"].as_array().is_some_and(|c| !c.is_empty()));
}
