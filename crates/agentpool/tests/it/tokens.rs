//! `agentpool tokens` through the binary: managed over the API of the server given with an
//! admin token; a token limited to a project and expiring, created on the database and over
//! the API, refused by flag, listed with its limits, and what the limited token may then do;
//! a worker token limited to a project, whose `worker` process runs that project's tasks only.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::{Env, SpawnReaped, Up, assert_stderr_contains, git, json, stderr, stdout, terminate};

fn sqlite_db(env: &Env) -> String {
    format!("sqlite://{}?mode=rwc", env.dir.path().join("prod.db").display())
}

/// `agentpool serve` (with auth) on the database `db`.
fn serve(env: &Env, db: &str) -> Up {
    let mut serve = env.cmd();
    serve.args(["serve", "--listen", "127.0.0.1:0", "--database-url", db]);
    Up::spawn(serve)
}

/// `agentpool ARGS` on `server` with `token`.
fn on(env: &Env, server: &Up, token: &str, args: &[&str]) -> Output {
    env.cmd()
        .args(["--server", &server.url, "--token", token])
        .args(args)
        .output()
        .expect("run agentpool")
}

#[test]
fn tokens_are_managed_over_the_api_of_the_server_given() {
    let env = Env::new();
    let db = sqlite_db(&env);
    let admin = env.create_token(&db, "root", "admin");
    let server = serve(&env, &db);
    let api = |token: &str, args: &[&str]| on(&env, &server, token, args);
    let o = api(
        &admin,
        &[
            "tokens",
            "create",
            "ci",
            "--role",
            "submitter",
            "--output",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let created: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let submitter = created["token"].as_str().unwrap().to_string();
    // The server knows the new token: it authenticates.
    let o = api(&submitter, &["tasks", "list", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Nothing went to a local database.
    assert!(!env.data_dir().join("agentpool.db").exists());
    let o = api(&admin, &["tokens", "list", "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    assert!(
        !listed.to_string().contains(&submitter),
        "values are never listed"
    );
    // Only an admin manages tokens.
    let o = api(&submitter, &["tokens", "create", "x", "--role", "admin"]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    let id = created["id"].as_str().unwrap();
    // A name in use is refused while its token is valid (the log names tokens), and free again
    // once it is revoked.
    let o = api(&admin, &["tokens", "create", "ci", "--role", "submitter"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim(),
        format!("agentpool: a token named ci already exists ({id}); revoke it first or choose another name")
    );
    let o = api(&admin, &["tokens", "revoke", id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = api(&admin, &["tokens", "create", "ci", "--role", "submitter"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = api(&submitter, &["tasks", "list"]);
        if o.status.code() != Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "a revoked token keeps working");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(server);
}

#[test]
fn a_token_limited_to_a_project_is_created_listed_and_kept_to_it() {
    let env = Env::new();
    let db = sqlite_db(&env);
    let admin = env.create_token(&db, "root", "admin");
    // On the database: a project that does not exist is refused by flag, as a usage error.
    let o = env.run(&[
        "tokens",
        "create",
        "web-ci",
        "--project",
        "web",
        "--database-url",
        &db,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim(),
        "agentpool: token refused: --project: no project named web"
    );

    let server = serve(&env, &db);
    let api = |token: &str, args: &[&str]| on(&env, &server, token, args);
    for name in ["web", "api"] {
        let repo = format!("https://example.com/{name}.git");
        let o = api(&admin, &["projects", "put", name, "--repo", &repo]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    // Over the API: every problem by its flag.
    let o = api(
        &admin,
        &[
            "tokens",
            "create",
            "root2",
            "--role",
            "admin",
            "--project",
            "web,nope",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim(),
        "agentpool: token refused: --project: only a submitter or worker token can be limited to \
         projects, not an admin token; --project: no project named nope"
    );
    let o = api(
        &admin,
        &[
            "tokens",
            "create",
            "web-ci",
            "--project",
            "web",
            "--expires-in",
            "30d",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let web_ci = stdout(&o).trim().to_string();
    assert!(web_ci.starts_with("apt_"), "the value alone on stdout: {web_ci}");
    let said = stderr(&o);
    assert!(
        said.contains("(web-ci, submitter of project web, expires 20"),
        "{said}"
    );
    assert!(
        said.contains("this is the only time its value is shown"),
        "{said}"
    );

    // Listed with its limits; a token for every project says so.
    let o = api(&web_ci, &["tasks", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = api(&admin, &["tokens", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {table}"))
            .to_string()
    };
    let head = table.lines().next().unwrap_or_default();
    for col in ["PROJECTS", "EXPIRES", "LAST USED"] {
        assert!(head.contains(col), "{head}");
    }
    let web_row = row("web-ci");
    assert!(web_row.contains(" web "), "{web_row}");
    assert!(!web_row.contains("never ago"), "{web_row}");
    let root_row = row("root");
    assert!(root_row.contains(" all "), "{root_row}");
    assert!(root_row.contains(" never "), "{root_row}");
    assert!(!table.contains(&web_ci), "values are never listed");

    // The limited token: its project's tasks only, refused elsewhere in one line.
    let o = api(&web_ci, &["submit", "--project", "web", "--command", "make"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = api(&web_ci, &["submit", "--project", "api", "--command", "make"]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("token web-ci is limited to projects web; it may not use project api"),
        "{err}"
    );
    let o = api(&web_ci, &["projects", "list", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["web"], "{listed}");
    drop(server);
}

#[test]
fn a_token_is_rotated_on_the_database_with_a_grace() {
    let env = Env::new();
    let db = sqlite_db(&env);
    let o = env.run(&[
        "tokens",
        "create",
        "ci",
        "--database-url",
        &db,
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let created: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = created["id"].as_str().unwrap();
    // Named, not by id: the one live token of that name.
    let o = env.run(&["tokens", "rotate", "ci", "--grace", "10m", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let value = stdout(&o).trim().to_string();
    assert!(value.starts_with("apt_") && value != created["token"], "{value}");
    let said = stderr(&o);
    assert!(
        said.contains(&format!("token {id} (ci) rotated. Its successor is ")),
        "{said}"
    );
    assert!(said.contains("The old token stops working at 20"), "{said}");
    // Two tokens named ci now: the old one expiring in ten minutes, the successor never.
    let o = env.run(&["tokens", "list", "--database-url", &db, "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 2, "{listed}");
    let old = rows.iter().find(|t| t["id"] == id).expect("the old one");
    let left = old["expires_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (t.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds())
        .expect("an expiry");
    assert!((500..=600).contains(&left), "{old}");
    let new = rows.iter().find(|t| t["id"] != id).expect("the successor");
    assert_eq!(
        (new["name"].as_str(), new["expires_at"].is_null()),
        (Some("ci"), true)
    );
    // A grace past 30 days is a usage error; an unknown token says so.
    let o = env.run(&["tokens", "rotate", id, "--grace", "31d", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = env.run(&["tokens", "rotate", "nope", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        "agentpool: no live token is named or has the id \"nope\": `agentpool tokens list` shows them"
    );
    // While the grace runs, the name stands for two tokens: the id is asked for.
    let o = env.run(&["tokens", "revoke", "ci", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(2));
    // In the order the list gives them.
    let ids: Vec<&str> = rows.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "agentpool: 2 live tokens are named ci ({}): give the id of the one meant",
            ids.join(", ")
        )
    );
    // An id shaped like one is taken as given, and an unknown one is not found.
    let unknown = "01a23901-c4f9-755d-9c9c-aa7fc317e16a";
    let o = env.run(&["tokens", "revoke", unknown, "--database-url", &db]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).trim(), format!("agentpool: token {unknown} not found"));
}

/// A worker token limited to a project, through the binaries: created over the API, a `worker`
/// process with it and no flag of its own, listed with its project, running the web task while
/// the api task waits and says why.
#[test]
fn a_worker_token_limited_to_a_project_runs_that_project_s_tasks_only() {
    let env = Env::new();
    let (server, admin, remote) = crate::restarts::start_pool(&env, &[]);
    let api = |token: &str, args: &[&str]| on(&env, &server, token, args);
    for name in ["web", "api"] {
        let o = api(
            &admin,
            &["projects", "put", name, "--repo", remote.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let o = api(
        &admin,
        &[
            "tokens",
            "create",
            "web-pods",
            "--role",
            "worker",
            "--project",
            "web",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_stderr_contains(&o, "(web-pods, worker of project web");
    let pods = stdout(&o).trim().to_string();
    let mut worker = env
        .cmd()
        .args(["worker", "--server", &server.url, "--token", &pods])
        .args(["--id", "web-pod", "--allow-local-repos"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_reaped();

    let submit = |project: &str, wait: bool| {
        let command = format!("echo {project} > {project}.txt");
        let mut args = vec!["submit", "--project", project, "--command", &command];
        args.extend(["--branch", project]);
        if wait {
            args.push("--wait");
        }
        api(&admin, &args)
    };
    let o = submit("api", false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let waiting = stdout(&o).trim().to_string();
    let o = submit("web", true);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(git(&remote, &["show", "web:web.txt"]), "web");

    let o = api(&admin, &["workers", "list"]);
    let table = stdout(&o);
    assert!(
        table.lines().next().unwrap_or_default().contains("PROJECTS"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("web-pod"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" web "), "{row}");
    let t = json(&api(&admin, &["--output", "json", "tasks", "show", &waiting]));
    assert_eq!(t["state"], "queued", "{t}");
    let o = api(&admin, &["tasks", "show", &waiting]);
    assert!(
        stdout(&o).contains("none online offers agent command on local repositories for project api"),
        "{}",
        stdout(&o)
    );
    terminate(&worker);
    assert!(worker.wait().expect("the worker exits").success());
}
