//! A kubelet and Job controller stand-in: takes the pod template of each Job the launcher
//! created in the in-memory API server, runs its container's command, args and environment as
//! a real local process (Secret and emptyDir mounts mapped to temporary directories, env
//! `secretKeyRef`s resolved from the stored Secrets, the image's `agentpool` mapped to the
//! binary under test), and writes back pod and Job status the way Kubernetes reports them.
//! A Job deleted with foreground propagation gets its process SIGTERMed (SIGKILL after the
//! pod's grace period) and is then removed with its pods and owned Secrets. An image pull can
//! be made to fail: the pod then waits `ErrImagePull`, as a kubelet reports it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpool_kube::fake::FakeApi;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// One pod the stand-in runs.
pub struct RunningPod {
    pub child: Child,
    pub terminating_since: Option<Instant>,
    pub grace: Duration,
    /// Where its container's stderr goes (the container log).
    pub log: PathBuf,
    /// Its container's `terminationMessagePolicy` is `FallbackToLogsOnError`.
    pub fallback_to_logs: bool,
}

#[derive(Clone)]
pub struct Kubelet {
    pub fake: FakeApi,
    root: PathBuf,
    pub pods: Arc<Mutex<HashMap<String, RunningPod>>>,
    /// Jobs whose pods have been started (never started twice).
    started: Arc<Mutex<Vec<String>>>,
    /// How many of the next Jobs' images fail to pull.
    failing_pulls: Arc<AtomicUsize>,
    /// Jobs whose image failed to pull (their pods never start).
    pull_failed: Arc<Mutex<Vec<String>>>,
}

impl Kubelet {
    pub fn new(fake: FakeApi, root: &Path) -> Self {
        Self {
            fake,
            root: root.to_path_buf(),
            pods: Arc::default(),
            started: Arc::default(),
            failing_pulls: Arc::default(),
            pull_failed: Arc::default(),
        }
    }

    /// The images of the next `n` Jobs fail to pull: their pods wait `ErrImagePull`.
    pub fn fail_pulls(&self, n: usize) {
        self.failing_pulls.store(n, Ordering::SeqCst);
    }

    /// Jobs whose image failed to pull, in order.
    pub fn pull_failed(&self) -> Vec<String> {
        self.pull_failed.lock().unwrap().clone()
    }

    /// Jobs whose pods were started, in order.
    pub fn started(&self) -> Vec<String> {
        self.started.lock().unwrap().clone()
    }

    /// The pid of the running process of `job`, if any.
    pub fn pid(&self, job: &str) -> Option<u32> {
        self.pods.lock().unwrap().get(job).map(|p| p.child.id())
    }

    /// One pass: start new Jobs, finish exited processes, carry out deletions.
    pub fn tick(&self) {
        for job in self.fake.jobs() {
            let name = job.metadata.name.clone().unwrap_or_default();
            let deleting = job.metadata.deletion_timestamp.is_some();
            let finished = job.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some();
            let pulling = !deleting
                && !finished
                && !self.started.lock().unwrap().contains(&name)
                && !self.pull_failed.lock().unwrap().contains(&name);
            if pulling
                && self
                    .failing_pulls
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                self.pull_failed.lock().unwrap().push(name.clone());
                self.set_pod(&job, PodPhase::PullFailed);
                continue;
            }
            // Like a kubelet, wait (ContainerCreating) until the Secrets the pod mounts exist.
            if pulling && let Some(pod) = self.start(&job) {
                self.started.lock().unwrap().push(name.clone());
                self.pods.lock().unwrap().insert(name.clone(), pod);
                self.set_pod(&job, PodPhase::Running);
            }
            if deleting {
                self.delete(&name);
            }
        }
        let mut exited = Vec::new();
        for (name, pod) in self.pods.lock().unwrap().iter_mut() {
            if let Ok(Some(status)) = pod.child.try_wait() {
                let code = status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
                });
                let log = std::fs::read_to_string(&pod.log).unwrap_or_default();
                // The test's own output keeps the pod's log, as it did when the pod wrote there.
                eprint!("{log}");
                let message = (pod.fallback_to_logs && code != 0).then(|| log_tail(&log));
                exited.push((name.clone(), code, message));
            }
        }
        for (name, code, message) in exited {
            self.pods.lock().unwrap().remove(&name);
            let Some(job) = self.fake.job(&name) else { continue };
            if job.metadata.deletion_timestamp.is_some() {
                self.fake.remove_job(&name);
                continue;
            }
            self.set_pod(&job, PodPhase::Exited(code, message));
            self.fake.set_job_status(&name, &job_status(code));
        }
    }

    /// Foreground deletion: SIGTERM now, SIGKILL after the grace period, then the Job goes.
    fn delete(&self, name: &str) {
        let mut pods = self.pods.lock().unwrap();
        match pods.get_mut(name) {
            None => {
                drop(pods);
                self.fake.remove_job(name);
            }
            Some(p) => match p.terminating_since {
                None => {
                    p.terminating_since = Some(Instant::now());
                    signal(p.child.id(), "TERM");
                }
                Some(t) if t.elapsed() > p.grace => signal(p.child.id(), "KILL"),
                Some(_) => {}
            },
        }
    }

    /// Start the pod's process; `None` while a Secret it mounts does not exist yet.
    fn start(&self, job: &Job) -> Option<RunningPod> {
        let name = job.metadata.name.clone().unwrap();
        let pod = job.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let c = &pod.containers[0];
        for v in pod.volumes.as_deref().unwrap_or_default() {
            if let Some(s) = &v.secret
                && self.fake.secret(s.secret_name.as_deref().unwrap()).is_none()
            {
                return None;
            }
        }
        let dir = self.root.join(&name);
        // Volumes: each mount path maps to a directory of its own.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for m in c.volume_mounts.clone().unwrap_or_default() {
            let host = dir.join(&m.name);
            std::fs::create_dir_all(&host).unwrap();
            let vol = pod
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == m.name)
                .unwrap();
            if let Some(s) = &vol.secret {
                let secret = self
                    .fake
                    .secret(s.secret_name.as_deref().unwrap())
                    .expect("checked above");
                for (k, v) in secret.data.unwrap_or_default() {
                    std::fs::write(host.join(k), v.0).unwrap();
                }
            }
            mounts.push((m.mount_path.clone(), host));
        }
        let env = container_env(&self.fake, c, &name);
        let log = dir.join("container.log");
        Some(RunningPod {
            child: spawn_container(c, &env, &mounts, &dir, Some(&log)),
            terminating_since: None,
            grace: Duration::from_secs(pod.termination_grace_period_seconds.unwrap_or(30) as u64),
            log,
            fallback_to_logs: c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"),
        })
    }

    fn set_pod(&self, job: &Job, phase: PodPhase) {
        let name = job.metadata.name.clone().unwrap();
        let mut labels = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .clone()
            .unwrap()
            .labels
            .unwrap();
        labels.insert("job-name".into(), name.clone());
        let (phase, state) = match phase {
            PodPhase::PullFailed => (
                "Pending",
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ErrImagePull".into()),
                        message: Some(
                            "failed to pull and unpack image \"agentpool:test\": failed to resolve \
                             reference: registry unavailable"
                                .into(),
                        ),
                    }),
                    ..ContainerState::default()
                },
            ),
            PodPhase::Running => (
                "Running",
                ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..ContainerState::default()
                },
            ),
            PodPhase::Exited(code, message) => (
                if code == 0 { "Succeeded" } else { "Failed" },
                ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        message,
                        reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                },
            ),
        };
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(format!("{name}-x7k2p")),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "run-task".into(),
                    image: "agentpool:test".into(),
                    image_id: String::new(),
                    ready: phase == "Running",
                    restart_count: 0,
                    state: Some(state),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        };
        self.fake.put_pod(&pod);
    }
}

enum PodPhase {
    /// Waiting `ErrImagePull`: the container never starts.
    PullFailed,
    Running,
    /// The exit code and the termination message.
    Exited(i32, Option<String>),
}

/// What `FallbackToLogsOnError` keeps of a container's log: its last 80 lines, at most 2048
/// bytes of them.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let mut from = tail.len().saturating_sub(2048);
    while !tail.is_char_boundary(from) {
        from += 1;
    }
    tail[from..].to_string()
}

/// The Job status the Job controller writes once its only pod (backoffLimit 0) ends.
pub fn job_status(code: i32) -> JobStatus {
    let cond = |t: &str, reason: &str, message: &str| JobCondition {
        type_: t.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..JobCondition::default()
    };
    if code == 0 {
        JobStatus {
            succeeded: Some(1),
            conditions: Some(vec![
                cond(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
                cond(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
            ]),
            ..JobStatus::default()
        }
    } else {
        JobStatus {
            failed: Some(1),
            conditions: Some(vec![
                cond(
                    "FailureTarget",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
                cond(
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
            ]),
            ..JobStatus::default()
        }
    }
}

/// The container dies at once, as when its node goes or the runtime kills it: SIGKILL to its
/// main process and every process below it (a container's processes all die with it).
pub fn kill_container(pid: u32) {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        all.extend(children(all[i]));
        i += 1;
    }
    for p in all {
        signal(p, "KILL");
    }
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                // The parent pid is the second field after the command name's closing ')'.
                s.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)) == Some(&pid.to_string())
            })
        })
        .collect()
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// A thread that runs a stand-in's `tick` every 100 ms, as a kubelet's sync loop polls, until
/// stopped or dropped.
pub struct SyncLoop {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SyncLoop {
    pub fn start(tick: impl Fn() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                tick();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop the loop; a panic inside it fails the test here.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the sync loop ran without panicking");
        }
    }
}

impl Drop for SyncLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start a pod's container as a local process of the binary under test (the image's entry
/// point): its args with each mount path replaced by the host directory `mounts` gives it,
/// `env` only (plus PATH), and `dir` as its home, data directory and working directory.
/// Run container `c` as a local process in `dir`; its stderr goes to `log` when given (the
/// container log), else to the test's.
pub fn spawn_container(
    c: &Container,
    env: &BTreeMap<String, String>,
    mounts: &[(String, PathBuf)],
    dir: &Path,
    log: Option<&Path>,
) -> Child {
    let map = |s: &str| {
        for (from, to) in mounts {
            if let Some(rest) = s.strip_prefix(from.as_str()) {
                return format!("{}{rest}", to.display());
            }
        }
        s.to_string()
    };
    assert_eq!(
        c.command.clone().unwrap(),
        vec!["agentpool".to_string()],
        "the image's entry point"
    );
    let args: Vec<String> = c.args.clone().unwrap().iter().map(|a| map(a)).collect();
    Command::new(env!("CARGO_BIN_EXE_agentpool"))
        .args(&args)
        .env_clear()
        .envs(env)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("AGENTPOOL_DATA_DIR", dir.join("data"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(match log {
            Some(p) => Stdio::from(std::fs::File::create(p).expect("the container log")),
            None => Stdio::inherit(),
        })
        .spawn()
        .expect("start the pod's process")
}

/// A container's environment as a kubelet resolves it: plain values, `secretKeyRef`s from the
/// stored Secrets, and `fieldRef: metadata.name` as `pod`.
pub fn container_env(fake: &FakeApi, c: &Container, pod: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in c.env.clone().unwrap_or_default() {
        let value = match (e.value, e.value_from) {
            (Some(v), _) => v,
            (None, Some(from)) => match (from.secret_key_ref, from.field_ref) {
                (Some(r), _) => {
                    let s = fake.secret(&r.name).expect("referenced Secret exists");
                    String::from_utf8(s.data.unwrap()[&r.key].0.clone()).unwrap()
                }
                (None, Some(f)) => {
                    assert_eq!(f.field_path, "metadata.name");
                    pod.to_string()
                }
                _ => panic!("unsupported env source"),
            },
            (None, None) => String::new(),
        };
        env.insert(e.name, value);
    }
    env
}
