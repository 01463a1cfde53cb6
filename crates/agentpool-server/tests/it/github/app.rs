//! GitHub App authentication, every call validated against GitHub's own API description by
//! prism: the server signs an App JWT, finds the installation on the repository, mints a token
//! for that one repository per claimed task (handed to the worker as its git token, shown
//! nowhere else, revoked when the task ends) and one, cached, for its own pull request and
//! comment calls.

use agentpool_client::Client;
use agentpool_core::github::GithubApp;
use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::ClaimedWork;
use agentpool_core::{TaskState, WorkerId};
use agentpool_github::AppKey;
use agentpool_testkit::db::Backend;
use agentpool_testkit::github::{
    GithubStandIn, INSTALLATION_ID, INSTALLATION_TOKEN, Prism, Recorded, TEST_ONLY_APP_KEY_PEM,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

use super::{Github, REPO, SECRET, deliver_task, example, github, settings};
use crate::support::{TestApp, complete, eventually, register, spawn_app_with, test_config};

const APP_ID: u64 = 90210;

/// The JWT of a request the App signed: checked against the App's public key, its claims.
fn app_claims(r: &Recorded) -> Value {
    let jwt = r
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .expect("bearer");
    let (signed, sig) = jwt.rsplit_once('.').expect("jwt");
    let key = AppKey::from_pem(TEST_ONLY_APP_KEY_PEM.as_bytes()).expect("test key");
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key_der())
        .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).expect("b64"))
        .expect("signed with the App's key");
    let claims = signed.split('.').nth(1).expect("claims");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("b64")).expect("json")
}

/// A server whose project `hello` is wired to GitHub as the App (through `installation_id`
/// when given, else looked up), with GitHub's API behind prism.
struct Wired {
    _dir: tempfile::TempDir,
    gh: GithubStandIn,
    prism: Prism,
    app: TestApp,
}

async fn wired_as_the_app(backend: Backend, installation_id: Option<u64>) -> Wired {
    let Github { gh, prism, _dir } = github(2).await;
    let mut config = test_config();
    config.github_interval = None;
    let app = spawn_app_with(backend, config).await.expect("database");
    let admin = app.admin();
    admin.put_credential("gh-webhook", SECRET).await.expect("secret");
    admin
        .put_credential("gh-app-key", TEST_ONLY_APP_KEY_PEM)
        .await
        .expect("key");
    let mut gs = settings(Some(prism.url()));
    gs.token = None;
    gs.app = Some(GithubApp {
        app_id: APP_ID,
        private_key: "gh-app-key".into(),
        installation_id,
    });
    admin
        .put_project(&ProjectSpec {
            name: "hello".into(),
            repo: "https://example.com/hello.git".into(),
            default_agent: Some("claude-code".into()),
            github: Some(gs),
            ..ProjectSpec::default()
        })
        .await
        .expect("project");
    Wired { _dir, gh, prism, app }
}

/// A worker registers and claims the one queued task: its client, its id, and the claim with
/// the credentials it carries.
async fn claim_as_a_worker(app: &TestApp) -> (Client, WorkerId, ClaimedWork) {
    let wrk = app.worker();
    let w = register(&wrk).await;
    let mut claimed = wrk
        .claim(&w.id, 1, std::time::Duration::ZERO)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    (wrk, w.id, claimed.remove(0))
}

async fn app_mints_scoped_tokens_for_the_worker_and_the_server(backend: Backend) {
    let Wired { gh, prism, app, _dir } = wired_as_the_app(backend, None).await;
    let admin = app.admin();
    // The key is a credential like any other: never shown back.
    let shown = serde_json::to_string(&admin.get_project("hello").await.expect("project")).unwrap();
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");

    let id = deliver_task(&app, "issues", "a-1", &example("issues", Some("labeled"))).await;

    // The server's own calls: installation found with the App's JWT, a token minted for the
    // one repository with pull request and issue rights, the comment written with it.
    agentpool_server::github::notifier::pass(app.state(), std::time::Duration::from_millis(1))
        .await
        .expect("pass");
    let reqs = gh.requests();
    let paths: Vec<_> = reqs.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(
        paths,
        [
            format!("GET /repos/{REPO}/installation"),
            format!("POST /app/installations/{INSTALLATION_ID}/access_tokens"),
            format!("POST /repos/{REPO}/issues/1/comments"),
        ],
        "{}",
        prism.log()
    );
    for r in &reqs[..2] {
        let c = app_claims(r);
        assert_eq!(c["iss"], APP_ID.to_string());
        let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
        assert!(exp > iat && exp - iat <= 600, "{c}");
    }
    assert_eq!(
        reqs[1].body,
        json!({"repositories": ["Hello-World"], "permissions": {"pull_requests": "write", "issues": "write"}})
    );
    assert_eq!(
        reqs[2].authorization.as_deref(),
        Some(format!("Bearer {INSTALLATION_TOKEN}").as_str())
    );

    // The worker's claim carries a token of its own, for this repository's contents only.
    gh.set_installation_token("ghs_minted-for-this-task-only");
    let (wrk, w, claimed) = claim_as_a_worker(&app).await;
    assert_eq!(
        claimed.credentials.get("git-token"),
        Some("ghs_minted-for-this-task-only")
    );
    // ... and where to revoke it when the attempt ends, for the worker to do.
    assert_eq!(claimed.revoke_git_token_at, Some(prism.url()));
    let reqs = gh.requests();
    let mint = reqs.last().expect("minted");
    assert_eq!(
        mint.path,
        format!("/app/installations/{INSTALLATION_ID}/access_tokens")
    );
    assert_eq!(
        mint.body,
        json!({"repositories": ["Hello-World"], "permissions": {"contents": "write"}})
    );
    // The installation was looked up once and remembered.
    assert_eq!(
        reqs.iter().filter(|r| r.path.ends_with("/installation")).count(),
        1
    );

    // The server's token is reused from its cache while it is fresh.
    let minted = gh.minted();
    agentpool_server::github::notifier::pass(app.state(), std::time::Duration::from_millis(1))
        .await
        .expect("pass");
    assert_eq!(gh.minted(), minted, "a cached server token was minted again");
    let last = gh.requests().pop().expect("comment update");
    assert_eq!(last.method, "PATCH");
    assert_eq!(
        last.authorization.as_deref(),
        Some(format!("Bearer {INSTALLATION_TOKEN}").as_str())
    );

    // Neither token is anywhere a user can read.
    let detail = app.submitter().get_task(id).await.expect("task");
    assert_ne!(detail.task.state, TaskState::Queued);
    let events = app.submitter().events(id, 0, 1000).await.expect("events");
    let seen = format!(
        "{}{}",
        serde_json::to_string(&detail).unwrap(),
        serde_json::to_string(&events).unwrap()
    );
    for t in [INSTALLATION_TOKEN, "ghs_minted-for-this-task-only"] {
        assert!(!seen.contains(t), "{t} leaked");
    }

    // The task ends: its token is revoked rather than left to live out its hour.
    complete(&wrk, &w, &claimed.claimed).await;
    let revoked = |gh: &GithubStandIn| {
        gh.requests()
            .into_iter()
            .filter(|r| r.method == "DELETE" && r.path == "/installation/token")
            .map(|r| r.authorization.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    // In the background, through prism (a Node process, slow to answer on a loaded machine):
    // a generous limit, reached in milliseconds when the machine is idle.
    eventually(std::time::Duration::from_secs(60), || !revoked(&gh).is_empty()).await;
    assert_eq!(revoked(&gh), ["Bearer ghs_minted-for-this-task-only"]);
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
}

async fn a_configured_installation_is_not_looked_up(backend: Backend) {
    let Wired { gh, prism, app, _dir } = wired_as_the_app(backend, Some(77)).await;
    deliver_task(&app, "issues", "a-2", &example("issues", Some("labeled"))).await;
    let (_, _, claimed) = claim_as_a_worker(&app).await;
    assert_eq!(claimed.credentials.get("git-token"), Some(INSTALLATION_TOKEN));
    let paths: Vec<_> = gh.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/app/installations/77/access_tokens"]);
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
}

crate::both_backends!(
    app_mints_scoped_tokens_for_the_worker_and_the_server,
    a_configured_installation_is_not_looked_up
);
