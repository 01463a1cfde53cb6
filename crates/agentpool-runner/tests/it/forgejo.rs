//! End to end from a build to a Forgejo pull request, with every part real except Forgejo
//! itself: a build of a project wired to Forgejo → a task on a real server → a worker running
//! the real Claude Code CLI against the scripted model → the branch pushed to the smart-HTTP
//! git server → the pull request opened through prism (each call checked against Forgejo's own
//! API description) and recorded in the build's result.

use agentpool_client::Client;
use agentpool_core::forgejo::ForgejoSettings;
use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::BuildRequest;
use agentpool_testkit::forgejo::{ForgejoStandIn, api_description};
use agentpool_testkit::github::Prism;
use agentpool_testkit::model::{ModelServer, Script, Step};

use super::agents::installed;
use super::github::{claude_worker, forge_server, hello_project, pull_request_of, pushed_within};
use super::worker::env;

const TOKEN: &str = "forgejo-e2e-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_is_pushed_and_gets_its_forgejo_pull_request() {
    if !installed("claude-code") {
        return;
    }
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = api_description(dir.path()).expect("Forgejo's API description (tools/forgejo)");
    let fj = ForgejoStandIn::start("main").await.unwrap();
    let prism = Prism::start(&spec, &fj.url(), dir.path()).await.expect("prism");

    let server = forge_server(&env, None).await;
    let base = server.url();
    let admin = Client::new(&base, None).unwrap();
    admin.put_credential("fj-token", TOKEN).await.unwrap();
    admin
        .put_project(&ProjectSpec {
            forgejo: Some(ForgejoSettings {
                repository: "acme/hello".into(),
                url: prism.url(),
                token: "fj-token".into(),
                pull_requests: true,
                draft: false,
            }),
            ..hello_project(&env)
        })
        .await
        .unwrap();

    let model = ModelServer::start(Script::new([
        Step::write_file("GREETING.md", "Hello\n"),
        Step::answer("Added GREETING.md."),
    ]))
    .await
    .unwrap();
    let worker = claude_worker(&env, env.server.token(), &model, &base);

    let build = admin
        .submit_build(
            "hello",
            &BuildRequest {
                prompt: "Add a greeting".into(),
                ..BuildRequest::default()
            },
        )
        .await
        .unwrap();
    let id = build.task.id;
    let (_, branch) = pushed_within(&env, id).await;
    assert_eq!(
        env.server.read_file("app", &branch, "GREETING.md").as_deref(),
        Some("Hello\n")
    );

    let pr = pull_request_of(&env, id, "the pull request").await;
    worker.stop().await;
    let pulls = fj.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        (
            pulls[0].head.as_str(),
            pulls[0].base.as_str(),
            pulls[0].title.as_str()
        ),
        (branch.as_str(), "main", "Add a greeting")
    );
    assert!(pulls[0].body.contains("Added GREETING.md."), "{}", pulls[0].body);
    assert_eq!((pr.number, pr.state.as_str()), (1, "open"));
    assert!(
        fj.requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some("token forgejo-e2e-token"))
    );
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
    server.shutdown().await.unwrap();
}
