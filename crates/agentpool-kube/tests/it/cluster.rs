//! Against a real cluster, when one is given: `AGENTPOOL_TEST_KUBECONFIG` names a kubeconfig
//! (kind, minikube, a test namespace). The Jobs (an attempt's, a check) and the Secret the
//! launcher would create are sent with server-side dry run (the API server validates and
//! admits them, nothing is stored), and the launcher's label selector is accepted by a list. Without a kubeconfig the test passes
//! with a notice, unless `AGENTPOOL_TEST_REQUIRE_KUBERNETES` is set: then it fails.

use agentpool_core::WorkerId;
use agentpool_kube::job::{build_check_job, build_job, build_secret, check_job_name, selector};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::launcher::template;
use crate::queue::work;

async fn client() -> Option<(Client, String)> {
    let Some(path) = std::env::var_os("AGENTPOOL_TEST_KUBECONFIG") else {
        assert!(
            std::env::var_os("AGENTPOOL_TEST_REQUIRE_KUBERNETES").is_none(),
            "AGENTPOOL_TEST_REQUIRE_KUBERNETES is set but AGENTPOOL_TEST_KUBECONFIG is not"
        );
        eprintln!("skipping: no cluster (set AGENTPOOL_TEST_KUBECONFIG to a kubeconfig)");
        return None;
    };
    let kc = Kubeconfig::read_from(&path).expect("read the kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    let ns = std::env::var("AGENTPOOL_TEST_KUBE_NAMESPACE").unwrap_or_else(|_| cfg.default_namespace.clone());
    Some((Client::try_from(cfg).expect("a client for the cluster"), ns))
}

#[tokio::test]
async fn the_cluster_admits_the_objects_a_launcher_creates() {
    let Some((client, ns)) = client().await else {
        return;
    };
    let id = WorkerId::parse("agentpool-launcher-test").unwrap();
    let w = work(1);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let created = jobs
        .create(&dry, &build_job(&template(), &id, &w))
        .await
        .expect("the API server accepts the Job");
    assert_eq!(created.spec.unwrap().backoff_limit, Some(0));
    let check = build_check_job(
        &template(),
        &id,
        &["claude-code".into()],
        &check_job_name(&id, chrono::Utc::now()),
    );
    jobs.create(&dry, &check)
        .await
        .expect("the API server accepts the check Job");
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    secrets
        .create(
            &dry,
            &build_secret(&id, &w, "5d1c2f9e-3a1b-4c7d-9e2f-6a8b0c1d2e3f"),
        )
        .await
        .expect("the API server accepts the attempt Secret");
    jobs.list(&ListParams::default().labels(&selector(&id)))
        .await
        .expect("the launcher's selector lists Jobs");
}
