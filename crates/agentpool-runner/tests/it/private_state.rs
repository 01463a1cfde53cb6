//! One task's private state (workspace, HOME, askpass directory) out of reach of another task
//! running at the same time on the same worker.

use std::time::Duration;

use crate::worker::{
    TOKEN, api, assert_succeeded, config, enqueue_command, env, events, finished, gate, log_lines, start,
    wait_log,
};

#[tokio::test]
async fn a_task_cannot_list_or_read_another_running_tasks_private_state() {
    let env = env().await;
    let (gate, wait) = gate(&env);
    // Task A makes its secret itself (so it is in no command line) and keeps it in its HOME,
    // its workspace and its scratch directory until the test lets it finish.
    let a_cmd = format!(
        "s=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n'); \
         echo \"$s\" > \"$HOME/secret\"; echo \"$s\" > secret.txt; echo \"$s\" > \"$TMPDIR/secret\"; \
         echo \"secret=$s\"; echo a-ready; {wait}"
    );
    let a = enqueue_command(&env, &a_cmd).await;
    let mut cfg = config(&env, "w2", TOKEN);
    cfg.concurrency = 2;
    let w = start(cfg, api(&env.store, Duration::from_secs(30)).await);
    let a_lines = wait_log(&env.store, a.id, "a-ready").await;
    let secret = a_lines
        .iter()
        .find_map(|l| l.strip_prefix("secret="))
        .expect("task A printed its secret")
        .to_string();
    assert_eq!(secret.len(), 32, "{secret:?}");

    // Task B knows where the worker keeps things and A's task id, and looks everywhere.
    let tasks = env.dir.path().join("w2/tasks");
    let creds = env.dir.path().join("w2/state/credentials");
    let (t, c, id) = (tasks.display(), creds.display(), a.id);
    let b_cmd = format!(
        "ls -la '{t}' && echo listed-tasks; ls -la '{c}' && echo listed-credentials; \
         ls -d '{t}'/*/ 2>&1; cat '{t}'/*/*/home/secret '{t}'/*/*/repo/secret.txt 2>&1; \
         cat '{t}/{id}/home/secret' '{t}/{id}/repo/secret.txt' '{c}/{id}/askpass.sh' 2>&1; \
         find '{t}' '{c}' 2>&1; grep -rs . '{t}' '{c}'; echo b-done"
    );
    let b = enqueue_command(&env, &b_cmd).await;
    let b_done = finished(&env.store, b.id).await;
    assert_succeeded(&b_done);
    let b_lines = log_lines(&events(&env.store, b.id).await);
    let b_text = b_lines.join("\n");
    assert!(b_lines.iter().any(|l| l == "b-done"), "{b_text}");
    assert!(!b_text.contains(&secret), "task B saw task A's secret:\n{b_text}");
    assert!(
        !b_text.contains("listed-tasks"),
        "task B listed the workspaces:\n{b_text}"
    );
    assert!(
        !b_text.contains("listed-credentials"),
        "task B listed the credentials:\n{b_text}"
    );
    assert!(b_text.contains("Permission denied"), "{b_text}");

    std::fs::write(&gate, "go").unwrap();
    let a_done = finished(&env.store, a.id).await;
    assert_succeeded(&a_done);
    w.stop().await;
    // Both tasks ended: their private directories are gone (the test may list: it is the
    // owner and restores read permission first, as an operator would).
    for parent in [&tasks, &creds] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(parent).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o311, "{}", parent.display());
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).unwrap();
        let left: Vec<_> = std::fs::read_dir(parent).unwrap().collect();
        assert!(left.is_empty(), "{}: {left:?}", parent.display());
    }
}
