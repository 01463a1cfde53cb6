//! The raw-SQL ceiling of a PostgreSQL queue on this machine, measured in the same run as
//! agentpool and graphile-worker: a narrow job table, a batched `UPDATE … SKIP LOCKED` claim
//! fenced by a lease token, and a batched completion that either deletes the job (what
//! graphile-worker does: nothing is kept) or keeps it as a finished row with its result (the
//! least a queue that keeps each task's record must write). No lifecycle events, no dependencies,
//! locks, slots or worker checks: what any engine with those guarantees can at best approach.

use std::sync::Arc;

use sqlx::PgPool;

use crate::queue::{Run, fresh_db, timed};

/// What the completion does with a finished job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// `DELETE`: no record of the job is left.
    Delete,
    /// `UPDATE` to a finished state with its result: the job's record is kept.
    Keep,
}

impl Finish {
    pub fn label(self) -> &'static str {
        match self {
            Finish::Delete => "raw SQL, delete on completion",
            Finish::Keep => "raw SQL, record kept",
        }
    }

    /// The label under its bar in the plot.
    pub fn short(self) -> &'static str {
        match self {
            Finish::Delete => "raw SQL delete",
            Finish::Keep => "raw SQL kept",
        }
    }
}

const SCHEMA: &str = "CREATE TABLE jobs ( \
       id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
       state TEXT NOT NULL DEFAULT 'queued', \
       priority INTEGER NOT NULL DEFAULT 0, \
       run_after BIGINT NOT NULL DEFAULT 0, \
       worker TEXT, \
       lease_token BIGINT NOT NULL DEFAULT 0, \
       payload TEXT NOT NULL, \
       result TEXT); \
     CREATE INDEX jobs_claim ON jobs (priority DESC, run_after, id) WHERE state = 'queued'";

const CLAIM: &str = "UPDATE jobs j SET state = 'running', worker = $1, \
       lease_token = j.lease_token + 1 \
     FROM (SELECT id FROM jobs WHERE state = 'queued' AND run_after <= 1 \
           ORDER BY priority DESC, run_after, id LIMIT $2 FOR UPDATE SKIP LOCKED) p \
     WHERE j.id = p.id RETURNING j.id, j.lease_token, j.payload";

const DELETE: &str = "DELETE FROM jobs j USING unnest($1::bigint[], $2::bigint[]) AS i(id, token) \
     WHERE j.id = i.id AND j.lease_token = i.token AND j.worker = $3";

const KEEP: &str = "UPDATE jobs j SET state = 'succeeded', result = $4 \
     FROM unnest($1::bigint[], $2::bigint[]) AS i(id, token) \
     WHERE j.id = i.id AND j.lease_token = i.token AND j.worker = $3 AND j.state = 'running'";

/// Claim and complete until the table has nothing queued; jobs done.
async fn drain(pool: PgPool, worker: String, batch: i64, finish: Finish, result: Arc<str>) -> usize {
    let mut done = 0;
    loop {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(CLAIM)
            .bind(&worker)
            .bind(batch)
            .fetch_all(&pool)
            .await
            .expect("raw claim");
        if rows.is_empty() {
            return done;
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let tokens: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let q = match finish {
            Finish::Delete => sqlx::query(DELETE),
            Finish::Keep => sqlx::query(KEEP),
        };
        let q = q.bind(&ids).bind(&tokens).bind(&worker);
        let q = if finish == Finish::Keep {
            q.bind(&*result)
        } else {
            q
        };
        let n = q.execute(&pool).await.expect("raw complete").rows_affected();
        done += usize::try_from(n).unwrap_or(usize::MAX);
    }
}

/// `tasks` jobs with `payload` drained by `claimers` connections in batches of `batch`, on a
/// fresh database.
pub async fn run(tasks: usize, claimers: usize, batch: u32, finish: Finish, payload: &str) -> Run {
    let db = fresh_db().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(claimers).unwrap_or(16) + 1)
        .connect(db.url())
        .await
        .expect("connect");
    sqlx::raw_sql(SCHEMA).execute(&pool).await.expect("schema");
    sqlx::query("INSERT INTO jobs (payload) SELECT $1 FROM generate_series(1, $2)")
        .bind(payload)
        .bind(i64::try_from(tasks).unwrap_or(i64::MAX))
        .execute(&pool)
        .await
        .expect("prefill");
    // Statistics only, no VACUUM: the queues beside it drain freshly inserted rows too (hint
    // bits unset, no visibility map), and a vacuumed table would flatter the ceiling.
    sqlx::query("ANALYZE jobs").execute(&pool).await.expect("analyze");
    let result: Arc<str> = serde_json::to_string(&agentpool_core::TaskResult::default())
        .expect("result json")
        .into();
    let drains = (0..claimers)
        .map(|i| {
            drain(
                pool.clone(),
                format!("r{i}"),
                i64::from(batch),
                finish,
                result.clone(),
            )
        })
        .collect();
    let run = timed(db.url(), tasks, drains).await;
    pool.close().await;
    run
}
