//! The launcher, a Job per attempt, and `run-task` in the pod, end to end: success with the
//! commit pushed (also against an https server with a private CA), the pod's process killed with SIGKILL mid-task (classified, retried in a new
//! Job), a cancel (Job deleted in the foreground, the task's processes stopped), two
//! launchers or a restarted launcher never creating a second Job for one attempt, and a task
//! retried after it failed running in a Job of its own.

use std::collections::BTreeMap;
use std::time::Duration;

use agentpool_core::{ErrorClass, EventPayload, LeaseToken, Lifecycle, TaskId, TaskState};
use agentpool_kube::job_name;
use agentpool_testkit::process::{PidFile, alive};

use super::{GIT_TOKEN, Harness, RunningLauncher};
use agentpool_kube::SecretKeyRef;
use k8s_openapi::api::core::v1::EnvVar;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_as_a_job_and_pushes_its_commit() {
    let Some(h) = Harness::start().await else { return };
    let launcher = h.launch(h.launcher_config("launcher-a", 2));
    let id = h.submit("echo from-a-pod > pod.txt", "k8s/ok").await;
    let d = h.wait_for(id, TaskState::Succeeded, 120).await;
    assert_eq!(d.attempts_detail.len(), 1);
    assert_eq!(d.attempts_detail[0].worker_id.as_str(), "launcher-a");
    assert_eq!(
        h.git.read_file("app", "k8s/ok", "pod.txt").as_deref(),
        Some("from-a-pod\n")
    );
    let summary = launcher.stop().await;
    assert_eq!((summary.created, summary.adopted, summary.failed), (1, 0, 0));

    // The task's events name the Job, before anything the pod reported.
    let name = job_name(id, LeaseToken(1));
    let events = h.client.events(id, 0, 1000).await.unwrap().events;
    let at = |f: &dyn Fn(&EventPayload) -> bool| events.iter().position(|e| f(&e.payload));
    let told = at(&|p| {
        matches!(p, EventPayload::Log { stream, line } if stream == "agentpool"
            && line.starts_with(&format!("Job {name} created in namespace agentpool")))
    })
    .expect("the Job is named in the task's events");
    let ready = at(&|p| matches!(p, EventPayload::Lifecycle(Lifecycle::WorkspaceReady { .. }))).unwrap();
    assert!(told < ready, "{events:?}");

    // Exactly the writes a launcher makes for one attempt: the Job, then its Secret.
    let writes = h.fake.writes();
    let kinds: Vec<(String, String)> = writes
        .iter()
        .map(|r| (r.method.clone(), r.resource.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![("POST".into(), "jobs".into()), ("POST".into(), "secrets".into())]
    );
    let job = writes[0].body.clone().unwrap();
    assert_eq!(job["metadata"]["name"], name.as_str());
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 1800 + 600);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 3600);
    assert_eq!(
        job["metadata"]["labels"]["agentpool.dev/task-id"],
        id.to_string().as_str()
    );
    assert_eq!(job["metadata"]["labels"]["agentpool.dev/attempt"], "1");
    let text = job.to_string();
    assert!(!text.contains(GIT_TOKEN), "no credential in the Job");
    assert!(!text.contains(&h.worker_token), "no worker token in the Job");
    let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
    let token_env = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "AGENTPOOL_TOKEN")
        .unwrap();
    assert_eq!(
        token_env["valueFrom"]["secretKeyRef"]["name"],
        "agentpool-worker-token"
    );
    // The Secret is owned by the Job, so the garbage collector removes it with the Job.
    let secret = writes[1].body.clone().unwrap();
    let uid = h.fake.job(&name).unwrap().metadata.uid.unwrap();
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
    assert_eq!(secret["metadata"]["name"], name.as_str());
}

/// In a real cluster the server is reached over https, often with a private CA: the pod gets
/// the CA from a Secret (`AGENTPOOL_CA_CERT_PEM`) and `run-task` trusts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reaches_an_https_server_through_a_private_ca() {
    let Some(h) = Harness::start_tls().await else {
        return;
    };
    assert!(h.server.url.starts_with("https://"), "{}", h.server.url);
    let launcher = h.launch(h.launcher_config("launcher-tls", 1));
    let id = h.submit("echo over-tls > pod.txt", "k8s/tls").await;
    let d = h.wait_for(id, TaskState::Succeeded, 120).await;
    assert_eq!(d.attempts_detail.len(), 1);
    assert_eq!(
        h.git.read_file("app", "k8s/tls", "pod.txt").as_deref(),
        Some("over-tls\n")
    );
    let job = h.fake.writes()[0].body.clone().unwrap();
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let ca = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "AGENTPOOL_CA_CERT_PEM")
        .expect("the CA reaches the pod");
    assert_eq!(ca["valueFrom"]["secretKeyRef"]["name"], "agentpool-ca");
    let summary = launcher.stop().await;
    assert_eq!((summary.created, summary.failed), (1, 0));
}

/// A launcher (`launcher-a`, one slot) running a task of `cmd` on `branch`, once the task's
/// process wrote its pid to `started`: the launcher, the task and that pid.
async fn sleeping(h: &Harness, started: &PidFile, cmd: &str, branch: &str) -> (RunningLauncher, TaskId, i32) {
    let launcher = h.launch(h.launcher_config("launcher-a", 1));
    let id = h.submit(cmd, branch).await;
    (
        launcher,
        id,
        started.wait(Duration::from_secs(60), String::new).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_killed_mid_task_is_classified_and_retried_in_a_new_job() {
    let Some(h) = Harness::start().await else { return };
    let started = PidFile::new().unwrap();
    let cmd = format!(
        "if [ -f '{s}' ]; then echo second > pod.txt; else echo $$ > '{s}'; exec sleep 300; fi",
        s = started.path().display()
    );
    let (launcher, id, sleeper) = sleeping(&h, &started, &cmd, "k8s/killed").await;
    let first = job_name(id, LeaseToken(1));
    let pid = h.kubelet.pid(&first).expect("the first pod runs");
    super::kubelet::kill_container(pid);

    let d = h.wait_for(id, TaskState::Succeeded, 120).await;
    assert_eq!(d.attempts_detail.len(), 2, "{d:#?}");
    let a1 = &d.attempts_detail[0];
    assert_eq!(a1.error_class, Some(ErrorClass::InfraError), "{a1:?}");
    let msg = a1.error_message.clone().unwrap_or_default();
    assert!(
        msg.contains("exited with code 137") && msg.contains(&first),
        "{msg}"
    );
    assert_eq!(
        h.git.read_file("app", "k8s/killed", "pod.txt").as_deref(),
        Some("second\n")
    );
    assert!(!alive(sleeper), "the killed pod's task process is gone");
    assert_eq!(h.kubelet.started(), vec![first, job_name(id, LeaseToken(2))]);
    let summary = launcher.stop().await;
    assert_eq!((summary.created, summary.failed), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_task_has_its_job_deleted_and_its_processes_stopped() {
    let Some(h) = Harness::start().await else { return };
    let started = PidFile::new().unwrap();
    let cmd = format!("echo $$ > '{}'; exec sleep 300", started.path().display());
    let (launcher, id, sleeper) = sleeping(&h, &started, &cmd, "k8s/cancel").await;
    h.client.cancel(id).await.unwrap();
    let d = h.wait_for(id, TaskState::Canceled, 60).await;
    assert_eq!(d.attempts_detail.len(), 1);
    let name = job_name(id, LeaseToken(1));
    // Deleted in the foreground, so its pod goes before the Job does.
    let deletes: Vec<_> = h
        .fake
        .writes()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert!(!deletes.is_empty());
    for r in &deletes {
        assert_eq!(r.name.as_deref(), Some(name.as_str()));
        assert_eq!(r.body.as_ref().unwrap()["propagationPolicy"], "Foreground");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.fake.job(&name).is_some() || alive(sleeper) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Job or the task's process stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    launcher.stop().await;
}

/// The pods' token revoked while one runs (the launcher's own stays valid): the pod stops its
/// task at the next refused heartbeat and exits with 5, instead of running to its end with
/// nothing it reports accepted; the launcher reports the attempt as its set-up failing
/// (`INFRA_CONFIG_ERROR`, not retried in a Job that would fail the same way), with the pod's
/// last words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_token_is_revoked_stops_its_task_and_says_why() {
    let Some(h) = Harness::start().await else { return };
    let pods = h.new_worker_token("pods").await;
    super::put_secret(&h.fake, "pod-token", "token", &pods.token);
    let mut cfg = h.launcher_config("launcher-a", 1);
    cfg.template.token_secret = SecretKeyRef {
        name: "pod-token".into(),
        key: "token".into(),
    };
    cfg.template.env.push(EnvVar {
        name: "AGENTPOOL_HEARTBEAT_SECS".into(),
        value: Some("1".into()),
        ..EnvVar::default()
    });
    let launcher = h.launch(cfg);
    let started = PidFile::new().unwrap();
    let cmd = format!("echo $$ > '{}'; exec sleep 300", started.path().display());
    let id = h.submit(&cmd, "k8s/revoked").await;
    let sleeper = started.wait(Duration::from_secs(60), String::new).await;
    h.client.revoke_token(&pods.id).await.unwrap();
    let name = job_name(id, LeaseToken(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let attempt = loop {
        let d = h.client.get_task(id).await.unwrap();
        if let Some(a) = d.attempts_detail.first().filter(|a| a.ended_at.is_some()) {
            break a.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the pod ran on: {d:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Stopped, and reaped once its pod's process is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while alive(sleeper) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task's process was not stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The pod's exit code (5: its token refused) is the Job's set-up failing, not the task,
    // with its last line, as the launcher read them from the pod before it deleted the Job.
    assert_eq!(attempt.error_class, Some(ErrorClass::InfraConfigError));
    let said = attempt.error_message.unwrap_or_default();
    assert!(
        said.starts_with(&format!("pod {name}-"))
            && said.contains(
                ": the server refused the pod's worker token (the Secret the Job template names): "
            )
            && said.ends_with("the server no longer accepts this pod's token (unknown or revoked token)"),
        "{said}"
    );
    launcher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_launchers_and_a_restart_never_create_a_second_job_for_an_attempt() {
    let Some(h) = Harness::start().await else { return };
    let a = h.launch(h.launcher_config("launcher-a", 2));
    let b = h.launch(h.launcher_config("launcher-b", 2));
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            h.submit(&format!("echo {i} > n.txt"), &format!("k8s/many-{i}"))
                .await,
        );
    }
    // Restart launcher A while its Jobs run: the new life adopts them instead of creating.
    let first_life = a.stop().await;
    let a2 = h.launch(h.launcher_config("launcher-a", 2));
    for id in &ids {
        let d = h.wait_for(*id, TaskState::Succeeded, 180).await;
        // No claim was dropped by the restart (that would cost an attempt and a lease expiry).
        assert_eq!(d.attempts_detail.len(), 1, "{d:#?}");
    }
    let second_life = a2.stop().await;
    let other = b.stop().await;
    let mut created: BTreeMap<String, u32> = BTreeMap::new();
    for r in h.fake.writes() {
        if r.method == "POST" && r.resource == "jobs" {
            let name = r.body.unwrap()["metadata"]["name"].as_str().unwrap().to_string();
            *created.entry(name).or_default() += 1;
        }
    }
    assert!(created.values().all(|n| *n == 1), "{created:?}");
    for id in &ids {
        assert!(created.contains_key(&job_name(*id, LeaseToken(1))), "{created:?}");
    }
    assert_eq!(created.len(), 6);
    assert_eq!(
        first_life.created + second_life.created + other.created,
        6,
        "{first_life:?} {second_life:?} {other:?}"
    );
}

#[test]
fn launcher_and_run_task_describe_their_flags_and_refuse_bad_input_in_one_line() {
    let env = crate::Env::new();
    for (cmd, flags) in [
        (
            "launcher",
            &["--config", "--slots", "--labels", "--namespace", "--id"][..],
        ),
        (
            "run-task",
            &[
                "--attempt-file",
                "--work-dir",
                "--task",
                "--attempt",
                "--ca-cert",
                "--check",
            ][..],
        ),
    ] {
        let o = env.run(&[cmd, "--help"]);
        assert_eq!(o.status.code(), Some(0));
        let help = crate::stdout(&o);
        for f in flags {
            assert!(help.contains(f), "{cmd} --help lacks {f}:\n{help}");
        }
    }
    let missing = env.dir.path().join("missing.json");
    let err = refused(&env, &["run-task", "--attempt-file", missing.to_str().unwrap()]);
    assert!(err.contains("cannot read the attempt file"), "{err}");
    let err = refused(&env, &["run-task", "--check"]);
    assert!(err.contains("--worker <ID>"), "{err}");

    // A check Job's pod without the agent its launcher offers: exit 1 and why, on one line
    // (its termination message), before the server is asked anything.
    let o = env
        .cmd_without_agents()
        .args([
            "--server",
            "http://127.0.0.1:9",
            "run-task",
            "--check",
            "--worker",
            "l",
        ])
        .args(["--agents", "claude-code", "--work-dir"])
        .arg(env.dir.path().join("check"))
        .output()
        .unwrap();
    let err = crate::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "agentpool: this pod cannot run an attempt: agent claude-code is not installed"
    );

    let bad = env.dir.path().join("template.json");
    std::fs::write(
        &bad,
        r#"{"image": "x", "serverUrl": "http://s", "tokenSecret": {"name": "t"}}"#,
    )
    .unwrap();
    let err = refused(&env, &["launcher", "--config", bad.to_str().unwrap()]);
    assert!(err.contains("not a valid Job template"), "{err}");
}

/// `args` (against a server that is not there) refused as bad input: exit 2 and a one-line
/// message, which is returned.
fn refused(env: &crate::Env, args: &[&str]) -> String {
    let o = env.run(&[&["--server", "http://127.0.0.1:9"][..], args].concat());
    let err = crate::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

/// A task retried with `tasks retry` after failing runs in a Job of its own, never in one of
/// the failed attempts' finished Jobs (which stay for `ttlSecondsAfterFinished`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_task_runs_in_a_new_job_not_in_the_failed_attempts() {
    let Some(h) = Harness::start().await else { return };
    let launcher = h.launch(h.launcher_config("launcher-a", 1));
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("fixed");
    let cmd = format!(
        "if [ -e '{}' ]; then echo second > pod.txt; else exit 1; fi",
        fixed.display()
    );
    let id = h.submit(&cmd, "k8s/retried").await;
    // A failed pod is retried with the task's attempts (3), each in its Job, then fails.
    let failed = h.wait_for(id, TaskState::Failed, 120).await;
    let n = failed.attempts_detail.len() as i64;
    assert_eq!(n, 3, "{failed:#?}");
    let mut jobs: Vec<String> = (1..=n).map(|t| job_name(id, LeaseToken(t))).collect();
    assert!(
        h.fake.job(&jobs[0]).is_some(),
        "the failed attempts' Jobs are kept"
    );

    std::fs::write(&fixed, "").unwrap();
    let retried = h.client.retry(id).await.unwrap();
    assert_eq!(retried.task.state, TaskState::Queued);
    let d = h.wait_for(id, TaskState::Succeeded, 120).await;
    assert_eq!(d.attempts_detail.len(), 4, "{d:#?}");
    assert_eq!(
        h.git.read_file("app", "k8s/retried", "pod.txt").as_deref(),
        Some("second\n")
    );
    let retry = job_name(id, LeaseToken(n + 1));
    jobs.push(retry.clone());
    assert_eq!(h.kubelet.started(), jobs);
    let job = h.fake.job(&retry).expect("the retry's own Job");
    let labels = job.metadata.labels.unwrap_or_default();
    // Its attempt number counts on from the failed ones'.
    assert_eq!(labels.get("agentpool.dev/attempt").map(String::as_str), Some("4"));
    let summary = launcher.stop().await;
    assert_eq!((summary.created, summary.adopted), (4, 0));
}
