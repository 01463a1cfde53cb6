//! A GitHub App installation token minted for a claim is revoked by the worker when the
//! attempt ends, whatever the server remembers: here no server minted or remembers anything
//! (the claim is given the token and the API to revoke it at, as a minting server's claim
//! carries them), so only the worker can have revoked it. The revocation goes through prism,
//! which checks it against GitHub's own API description.

use agentpool_testkit::github::{GithubStandIn, Prism, api_subset};

use super::*;

/// Hands each claim `TOKEN` (what the git server takes, as GitHub takes a minted token) as its
/// minted `git-token`, to be revoked at the API `.0`.
struct Minted(String);

impl Hooks for Minted {
    fn claimed(&self, work: &mut ClaimedWork) {
        work.credentials.0.insert("git-token".into(), TOKEN.into());
        work.revoke_git_token_at = Some(self.0.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_revokes_the_minted_git_token_when_the_attempt_ends() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let (spec_path, spec) = api_subset(dir.path()).expect("GitHub's API description (tools/github)");
    let gh = GithubStandIn::start(&spec, "main", 1).await.unwrap();
    let prism = Prism::start(&spec_path, &gh.url(), dir.path())
        .await
        .expect("prism");
    let api = hooked(&env.store, Duration::from_secs(30), Minted(prism.url())).await;
    let task = enqueue_command(&env, "echo pushed > pushed.txt").await;
    let w = start(config(&env, "w1", "not-the-token"), api);
    let done = finished(&env.store, task.id).await;
    w.stop().await;
    // Pushed with the minted token (the worker's own is refused), then revoked with it, before
    // the attempt was reported.
    assert_succeeded(&done);
    let revoked: Vec<_> = gh
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path == "/installation/token")
        .map(|r| r.authorization.unwrap_or_default())
        .collect();
    assert_eq!(revoked, [format!("Bearer {TOKEN}")]);
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
}
