//! Opening a database whose schema this build cannot migrate fails with the reason in words;
//! a migration brings the tasks queued before it up to what this build expects of them; an
//! SQLite file deleted or replaced under a running store takes no more writes; stores opening
//! one new SQLite file at once make its schema once; another process opening and closing the
//! file a store runs on takes nothing from it.

use agentpool_core::TaskSpec;
use agentpool_core::spec::LOCAL_REPOS_LABEL;
use agentpool_store::open_store;
use agentpool_testkit::db::{Backend, TestDb};

use crate::both;
use crate::harness::{Harness, cmd, ids, labels};

both!(
    a_database_migrated_by_a_newer_agentpool_is_refused_in_words,
    tasks_on_local_repositories_queued_before_their_label_get_it
);

async fn a_database_migrated_by_a_newer_agentpool_is_refused_in_words(h: Harness) {
    // What a newer agentpool leaves behind: one more migration than this build carries.
    let record = "INSERT INTO _sqlx_migrations \
                  (version, description, success, checksum, execution_time) \
                  VALUES (9000, 'from the future', TRUE, x'00', 1)";
    let record_pg = record.replace("x'00'", "'\\x00'::bytea");
    match h.backend() {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(h.db.url()).await.unwrap();
            sqlx::query(record).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(h.db.url()).await.unwrap();
            sqlx::query(&record_pg).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    let err = open_store(h.db.url())
        .await
        .err()
        .expect("a newer schema is refused")
        .to_string();
    assert!(
        err.starts_with("the database was migrated by a newer agentpool (it has migration 9000; "),
        "{err}"
    );
    assert!(err.ends_with("run that version or a newer one"), "{err}");
}

/// A task on a local repository queued by a build that did not label it yet (its spec and the
/// column the claim matches hold no label) is labelled by the migration, so a worker that
/// does not read local repositories leaves it to one that does.
async fn tasks_on_local_repositories_queued_before_their_label_get_it(h: Harness) {
    let path = h.submit(TaskSpec::command("/srv/repos/app", "true")).await;
    let url = h.submit(TaskSpec::command("FILE:///srv/repos/app", "true")).await;
    let remote = h.submit(cmd("true")).await;
    // As the older build left them, and the label's migration not yet applied (a migration
    // not recorded is applied at the next open, whatever came after it).
    let (strip, unapply) = (
        match h.backend() {
            Backend::Sqlite => "UPDATE tasks SET spec = json_remove(spec, '$.labels'), labels = NULL",
            Backend::Postgres => "UPDATE tasks SET spec = (spec::jsonb - 'labels')::text, labels = NULL",
        },
        "DELETE FROM _sqlx_migrations WHERE description = 'local repos label'",
    );
    match h.backend() {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(h.db.url()).await.unwrap();
            for q in [strip, unapply] {
                sqlx::query(q).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(h.db.url()).await.unwrap();
            for q in [strip, unapply] {
                sqlx::query(q).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
    }
    let spec = async |id| h.store.get_task(id).await.unwrap().unwrap().task.spec;
    assert!(spec(path).await.labels.is_empty());

    // Opening the database applies the migration again.
    let store = h.replica().await;
    let local = labels(&[(LOCAL_REPOS_LABEL, "true")]);
    for id in [path, url] {
        let t = store.get_task(id).await.unwrap().unwrap().task;
        assert_eq!(t.spec.labels, local, "{}", t.spec.repo.unwrap_or_default());
    }
    assert!(spec(remote).await.labels.is_empty());
    let plain = h.worker("plain", &["command"], &[]).await;
    assert_eq!(ids(&plain.claim(10).await), vec![remote]);
    let reads = h
        .worker("reads", &["command"], &[(LOCAL_REPOS_LABEL, "true")])
        .await;
    let mut claimed = ids(&reads.claim(10).await);
    claimed.sort();
    let mut both = vec![path, url];
    both.sort();
    assert_eq!(claimed, both);
}

/// SQLite goes on writing into a database file that was deleted (a data directory removed by
/// hand), where nothing will read it again: the store refuses every write from then on as the
/// database being unavailable (503 from the server), and does so for a file copied over it too.
#[tokio::test]
async fn an_sqlite_file_deleted_or_replaced_under_the_store_takes_no_more_writes() {
    let db = TestDb::sqlite();
    let store = open_store(db.url()).await.unwrap();
    store
        .enqueue(cmd("true"))
        .await
        .expect("a write while the file is there");
    let path = std::path::PathBuf::from(db.url().trim_start_matches("sqlite://"));
    let kept = path.with_extension("kept");
    std::fs::copy(&path, &kept).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let refused = |e: agentpool_store::StoreError| {
        assert!(e.is_unavailable(), "{e}");
        assert!(e.to_string().contains("was deleted or replaced"), "{e}");
    };
    refused(store.enqueue(cmd("lost?")).await.expect_err("deleted"));
    // A copy put back in its place is another file: what the store wrote meanwhile is not in it.
    std::fs::rename(&kept, &path).unwrap();
    refused(store.enqueue(cmd("lost?")).await.expect_err("replaced"));
    // A store opened on it anew takes writes again.
    let reopened = open_store(db.url()).await.unwrap();
    reopened
        .enqueue(cmd("true"))
        .await
        .expect("a write to the file in place");
}

/// Several processes opening one new SQLite database at once (transient `agentpool run`s on a
/// fresh data directory) each find the schema made once, not fail on "table already exists".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_opening_one_new_sqlite_database_at_once_all_open_it() {
    for _ in 0..5 {
        let db = TestDb::sqlite();
        let opens = (0..4).map(|_| open_store(db.url()));
        let stores = futures::future::join_all(opens).await;
        for s in &stores {
            assert!(s.is_ok(), "{:?}", s.as_ref().err().map(ToString::to_string));
        }
        let store = stores.into_iter().next().unwrap().unwrap();
        store.enqueue(cmd("true")).await.expect("a working schema");
    }
}

/// Set in the child process of [`another_process_opening_and_closing_the_database_loses_nothing`]
/// to the database it adds a task to.
const CHILD_DB: &str = "AGENTPOOL_TEST_CHILD_DB";

/// Open the store at `url` in another process (this test binary, running this test as the
/// child), add one task, close the store, and return how many tasks that process saw.
fn in_another_process(url: &str) -> usize {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "schema::another_process_opening_and_closing_the_database_loses_nothing",
            "--nocapture",
        ])
        .env(CHILD_DB, url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tasks seen: "))
        .unwrap_or_else(|| panic!("no count in {stdout}"))
        .parse()
        .unwrap()
}

async fn tasks_in(store: &dyn agentpool_store::Store) -> usize {
    store.count_by_state().await.unwrap().values().sum::<u64>() as usize
}

/// A process that opens the database a running store has open (`agentpool tokens create
/// --database-url`, a transient `agentpool run` in the same data directory) and closes it again
/// must not take the database as its alone: had it, it would checkpoint and delete the
/// write-ahead log the running store still writes to, and every later change of that store
/// would go where no other process reads it, and be lost.
#[tokio::test]
async fn another_process_opening_and_closing_the_database_loses_nothing() {
    if let Ok(url) = std::env::var(CHILD_DB) {
        let store = open_store(&url).await.unwrap();
        store.enqueue(cmd("from the other process")).await.unwrap();
        println!("tasks seen: {}", tasks_in(store.as_ref()).await);
        store.close().await;
        return;
    }
    let db = TestDb::sqlite();
    let running = open_store(db.url()).await.unwrap();
    // Whether a lost lock shows depends on which connection of the running store took it
    // first: a few rounds make the loss show whichever it was.
    let mut written = 0;
    for _ in 0..4 {
        running
            .enqueue(cmd("in the running store"))
            .await
            .expect("the running store still writes");
        written += 2; // this one, and the other process's
        assert_eq!(
            in_another_process(db.url()),
            written,
            "another process sees every task the running store wrote"
        );
    }
    assert_eq!(tasks_in(running.as_ref()).await, written);
}
