//! Kubernetes end to end without a cluster: a real `agentpool serve` on PostgreSQL, the real
//! smart-HTTP git server, the launcher (library) against the in-memory API server, and the
//! kubelet stand-in running each Job's pod as a real `agentpool run-task` process.

mod e2e;
mod kubelet;
mod pool_e2e;
mod pool_kubelet;
mod recheck;

use std::sync::Arc;
use std::time::Duration;

use agentpool_client::{Client, ClientConfig};
use agentpool_core::protocol::TaskDetail;
use agentpool_core::spec::TaskKind;
use agentpool_core::{TaskId, TaskSpec, TaskState, WorkerId};
use agentpool_kube::fake::{FakeApi, NAMESPACE};
use agentpool_kube::launcher::LauncherSummary;
use agentpool_kube::{JobTemplate, LauncherConfig, SecretKeyRef, run_launcher};
use agentpool_testkit::db::TestDb;
use agentpool_testkit::git::GitServer;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio_util::sync::CancellationToken;

use crate::{Env, Up, stderr};
use kubelet::{Kubelet, SyncLoop};

pub const GIT_TOKEN: &str = "k8s-git-token-9c41d2e7";
/// 32 zero bytes, base64: the server key for stored credentials.
const SERVER_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

pub struct Harness {
    _env: Env,
    /// The CA (PEM) the server's certificate is signed by, when it serves https.
    ca_pem: Option<String>,
    pub server: Up,
    pub git: GitServer,
    pub client: Client,
    pub worker_token: String,
    pub fake: FakeApi,
    pub kubelet: Kubelet,
    sync: Option<SyncLoop>,
    _db: TestDb,
}

pub struct RunningLauncher {
    pub stop: CancellationToken,
    pub handle: tokio::task::JoinHandle<LauncherSummary>,
}

impl RunningLauncher {
    pub async fn stop(self) -> LauncherSummary {
        self.stop.cancel();
        self.handle.await.unwrap()
    }
}

impl Harness {
    /// A new worker token named `name` (for a pod's Secret).
    pub async fn new_worker_token(&self, name: &str) -> agentpool_core::protocol::CreatedToken {
        let req = agentpool_core::protocol::TokenCreate::new(name, "worker");
        self.client.create_token(&req).await.expect("create token")
    }

    /// `None` only when PostgreSQL is not configured and services are not required.
    pub async fn start() -> Option<Self> {
        Self::start_with(false).await
    }

    /// Like [`Harness::start`], the server terminating TLS with a certificate from a private
    /// CA; pods get the CA from a Secret, as an operator would configure it.
    pub async fn start_tls() -> Option<Self> {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Option<Self> {
        let db = TestDb::postgres().await?;
        let env = Env::new();
        let o = env.run(&["migrate", "--database-url", db.url()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let admin = env.create_token(db.url(), "ops", "admin");
        let worker_token = env.create_token(db.url(), "launcher", "worker");
        let mut serve = env.cmd();
        serve.env("AGENTPOOL_SERVER_KEY", SERVER_KEY).args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            db.url(),
        ]);
        let ca_pem = tls.then(|| {
            let pki = crate::tls::pki(env.dir.path());
            crate::tls::with_tls(&mut serve, &pki.cert, &pki.key);
            std::fs::read_to_string(&pki.ca).unwrap()
        });
        let server = Up::spawn(serve);
        let client = Client::with_config(
            ClientConfig::new(&server.url)
                .token(Some(admin))
                .ca_pem(ca_pem.clone().map(String::into_bytes)),
        )
        .unwrap();
        client.put_credential("git-token", GIT_TOKEN).await.unwrap();
        let git = GitServer::start(GIT_TOKEN).await.unwrap();
        git.create_repo("app", &[&[("README.md", "# app\n")]]).unwrap();

        let fake = FakeApi::new();
        // What an operator applies once: the worker token the pods authenticate with.
        put_secret(&fake, "agentpool-worker-token", "token", &worker_token);
        if let Some(ca) = &ca_pem {
            put_secret(&fake, "agentpool-ca", "ca.pem", ca);
        }
        let kubelet = Kubelet::new(fake.clone(), &env.dir.path().join("nodes"));
        let sync = {
            let k = kubelet.clone();
            SyncLoop::start(move || k.tick())
        };
        Some(Self {
            _env: env,
            ca_pem,
            server,
            git,
            client,
            worker_token,
            fake,
            kubelet,
            sync: Some(sync),
            _db: db,
        })
    }

    pub fn launcher_config(&self, id: &str, slots: u32) -> LauncherConfig {
        let mut t = JobTemplate::new(
            "agentpool:test",
            &self.server.url,
            SecretKeyRef {
                name: "agentpool-worker-token".into(),
                key: "token".into(),
            },
        );
        t.termination_grace_period_seconds = 20;
        if self.ca_pem.is_some() {
            t.ca_secret = Some(SecretKeyRef {
                name: "agentpool-ca".into(),
                key: "ca.pem".into(),
            });
        }
        let mut cfg = LauncherConfig::new(WorkerId::parse(id).unwrap(), NAMESPACE, t, slots);
        cfg.heartbeat_interval = Duration::from_millis(500);
        cfg.reconcile_interval = Duration::from_millis(200);
        cfg
    }

    pub fn launch(&self, cfg: LauncherConfig) -> RunningLauncher {
        let api = Client::with_config(
            ClientConfig::new(&self.server.url)
                .token(Some(self.worker_token.clone()))
                .ca_pem(self.ca_pem.clone().map(String::into_bytes)),
        )
        .unwrap();
        let stop = CancellationToken::new();
        let kube = self.fake.client();
        let s = stop.clone();
        let handle = tokio::spawn(async move { run_launcher(cfg, Arc::new(api), kube, s).await.unwrap() });
        RunningLauncher { stop, handle }
    }

    pub async fn submit(&self, command: &str, branch: &str) -> TaskId {
        let spec = TaskSpec {
            kind: TaskKind::Command,
            repo: Some(self.git.url("app")),
            branch: Some(branch.into()),
            command: Some(command.into()),
            credentials: vec!["git-token".into()],
            ..TaskSpec::default()
        };
        self.client.submit(&spec).await.unwrap().task.id
    }

    /// Wait until `id` reaches `state` (or fail after `secs`).
    pub async fn wait_for(&self, id: TaskId, state: TaskState, secs: u64) -> TaskDetail {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let d = self.client.get_task(id).await.unwrap();
            if d.task.state == state {
                return d;
            }
            assert!(
                !d.task.state.is_finished() && tokio::time::Instant::now() < deadline,
                "task {id} is {:?}, waited for {state:?}: {d:#?}",
                d.task.state
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // No pod may be started again once they are killed.
        drop(self.sync.take());
        for (_, mut p) in self.kubelet.pods.lock().unwrap().drain() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// A Secret `name` holding `value` under `key`, as an operator would create it.
fn put_secret(fake: &FakeApi, name: &str, key: &str, value: &str) {
    fake.put_secret(&Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Secret::default()
    });
}
