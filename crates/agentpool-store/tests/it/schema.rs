//! Opening a database whose schema this build cannot migrate fails with the reason in words.

use agentpool_store::open_store;
use agentpool_testkit::db::Backend;

use crate::both;
use crate::harness::Harness;

both!(a_database_migrated_by_a_newer_agentpool_is_refused_in_words);

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
