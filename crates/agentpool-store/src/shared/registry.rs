//! Workers, projects, credentials, profiles and tokens: plain CRUD, the same on both backends.

/// Instantiate the registry queries for database `$db` (see the [module docs](super)).
macro_rules! registry_queries {
    ($db:ty) => {
        use std::collections::HashMap;
        use std::time::Duration;

        use agentpool_core::project::ProjectSpec;
        use agentpool_core::worker::WorkerRegistration;
        use agentpool_core::{Project, Timestamp, Worker, WorkerId};
        use sqlx::{Pool, Row};

        use $crate::common::{self, dur_ms, json, project_row, token_row, worker_row};
        use $crate::{Result, StoreError, TokenRecord};

        type Db = $db;
        type DbRow = <Db as sqlx::Database>::Row;

        /// The row `sql` selects by `key` (bound as `$1`), read with `map`.
        async fn read_one<T>(
            r: &Pool<Db>,
            sql: &str,
            key: &str,
            map: fn(&DbRow) -> Result<T>,
        ) -> Result<Option<T>> {
            sqlx::query(sql).bind(key).fetch_optional(r).await?.as_ref().map(map).transpose()
        }

        /// Every row `sql` selects, read with `map`.
        async fn read_all<T>(r: &Pool<Db>, sql: &str, map: fn(&DbRow) -> Result<T>) -> Result<Vec<T>> {
            sqlx::query(sql).fetch_all(r).await?.iter().map(map).collect()
        }

        /// Change (or delete) the one `what` record `sql` names by `id` (bound as `$1`):
        /// `NotFound` when there is none.
        async fn write_one(w: &Pool<Db>, sql: &str, what: &'static str, id: &str) -> Result<()> {
            let n = sqlx::query(sql).bind(id).execute(w).await?.rows_affected();
            common::found(n, what, id)
        }

        /// Tasks running per worker (of `worker` only, when given).
        pub(crate) async fn running_counts(
            r: &Pool<Db>,
            worker: Option<&WorkerId>,
        ) -> Result<HashMap<String, u32>> {
            let rows = sqlx::query(
                "SELECT worker_id, count(*) AS n FROM tasks WHERE state = 'running' \
                 AND ($1 IS NULL OR worker_id = $1) GROUP BY worker_id",
            )
            .bind(worker.map(|w| w.as_str()))
            .fetch_all(r)
            .await?;
            let mut m = HashMap::new();
            for row in rows {
                let w: Option<String> = row.try_get("worker_id")?;
                let n: i64 = row.try_get("n")?;
                if let Some(w) = w {
                    m.insert(w, u32::try_from(n).unwrap_or(0));
                }
            }
            Ok(m)
        }

        async fn with_running(
            r: &Pool<Db>,
            row: &DbRow,
            id: &WorkerId,
        ) -> Result<Worker> {
            let running = running_counts(r, Some(id)).await?;
            worker_row(row, running.get(id.as_str()).copied().unwrap_or(0))
        }

        pub(crate) async fn register_worker(
            w: &Pool<Db>,
            r: &Pool<Db>,
            reg: WorkerRegistration,
            now: i64,
        ) -> Result<Worker> {
            let id = reg
                .id
                .clone()
                .unwrap_or_else(|| WorkerId::generate(&reg.hostname));
            // A registration that is not a fresh start comes from a worker that runs on (it
            // learned its agents' versions, stopped offering one, or recovered) or from a
            // launcher whose Jobs outlive it: it keeps the time it registered (unless it had
            // gone offline), its tasks keep it busy, and a drain asked of it stands, even when
            // it registers before its next beat has heard of it. A drained worker that exits
            // goes offline, so only one killed while draining is asked to drain again.
            let row = sqlx::query(
                "INSERT INTO workers (id, hostname, version, agents, labels, slots, status, \
                 registered_at, last_heartbeat_at, projects) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'idle', $7, $7, $8) \
                 ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, \
                   version = excluded.version, agents = excluded.agents, labels = excluded.labels, \
                   slots = excluded.slots, projects = excluded.projects, \
                   status = CASE WHEN NOT $9 AND workers.status IN ('draining', 'busy') \
                     THEN workers.status ELSE 'idle' END, \
                   status_message = NULL, \
                   registered_at = CASE WHEN NOT $9 AND workers.status <> 'offline' \
                     THEN workers.registered_at ELSE excluded.registered_at END, \
                   last_heartbeat_at = excluded.last_heartbeat_at \
                 RETURNING *",
            )
            .bind(id.as_str())
            .bind(&reg.hostname)
            .bind(&reg.version)
            .bind(json(&reg.agents)?)
            .bind(json(&reg.labels)?)
            .bind(i64::from(reg.slots))
            .bind(now)
            .bind(json(&reg.projects)?)
            .bind(reg.fresh_start)
            .fetch_one(w)
            .await?;
            with_running(r, &row, &id).await
        }

        pub(crate) async fn get_worker(r: &Pool<Db>, id: &WorkerId) -> Result<Option<Worker>> {
            let row = sqlx::query("SELECT * FROM workers WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(r)
                .await?;
            match row {
                None => Ok(None),
                Some(row) => Ok(Some(with_running(r, &row, id).await?)),
            }
        }

        pub(crate) async fn list_workers(r: &Pool<Db>) -> Result<Vec<Worker>> {
            let counts = running_counts(r, None).await?;
            sqlx::query("SELECT * FROM workers ORDER BY id")
                .fetch_all(r)
                .await?
                .iter()
                .map(|row| {
                    let id: String = row.try_get("id")?;
                    worker_row(row, counts.get(&id).copied().unwrap_or(0))
                })
                .collect()
        }

        /// Whether a worker online and taking tasks (idle or busy) could run a task of `shape`
        /// and, when none can, why. Reads only what the answer needs: no running counts, no
        /// whole rows.
        pub(crate) async fn workers_that_can_run(
            r: &Pool<Db>,
            shape: &$crate::Shape,
        ) -> Result<$crate::shared::registry::WorkersThatCanRun> {
            let rows = sqlx::query(
                "SELECT agents, labels, projects, status FROM workers \
                 WHERE status IN ('idle', 'busy', 'unhealthy')",
            )
            .fetch_all(r)
            .await?;
            let mut can = $crate::shared::registry::WorkersThatCanRun::default();
            for row in &rows {
                let agents: Vec<agentpool_core::worker::AgentInfo> =
                    serde_json::from_str(&row.try_get::<String, _>("agents")?)
                        .map_err(|e| common::corrupt("worker agents", e))?;
                let labels: agentpool_core::Labels = serde_json::from_str(&row.try_get::<String, _>("labels")?)
                    .map_err(|e| common::corrupt("worker labels", e))?;
                let projects: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("projects")?)
                    .map_err(|e| common::corrupt("worker projects", e))?;
                let unhealthy = row.try_get::<String, _>("status")? == "unhealthy";
                let offers = |a: &str| agentpool_core::worker::offers(agents.iter().map(|x| x.name.as_str()), a);
                if !shape.fits(offers, &labels, &[]) {
                    // Would it, did it read local repositories? Then that is what to say.
                    let local = agentpool_core::spec::LOCAL_REPOS_LABEL;
                    if shape.labels.contains_key(local) && !labels.contains_key(local) {
                        let mut reading = labels.clone();
                        reading.insert(local.into(), "true".into());
                        can.local_repos_not_read |= !unhealthy && shape.fits(offers, &reading, &projects);
                    }
                    continue;
                }
                if !shape.fits(offers, &labels, &projects) {
                    can.other_projects = true;
                } else if unhealthy {
                    can.unhealthy += 1;
                } else {
                    return Ok($crate::shared::registry::WorkersThatCanRun {
                        any: true,
                        ..Default::default()
                    });
                }
            }
            Ok(can)
        }

        pub(crate) async fn drain_worker(w: &Pool<Db>, r: &Pool<Db>, id: &WorkerId) -> Result<Worker> {
            let row = sqlx::query("UPDATE workers SET status = 'draining' WHERE id = $1 RETURNING *")
                .bind(id.as_str())
                .fetch_optional(w)
                .await?
                .ok_or_else(|| StoreError::not_found("worker", id))?;
            with_running(r, &row, id).await
        }

        pub(crate) async fn report_worker_cache(
            w: &Pool<Db>,
            id: &WorkerId,
            cache: &agentpool_core::CacheStats,
        ) -> Result<()> {
            let n = sqlx::query("UPDATE workers SET cache_stats = $1 WHERE id = $2")
                .bind(json(cache)?)
                .bind(id.as_str())
                .execute(w)
                .await?
                .rows_affected();
            common::found(n, "worker", id.as_str())
        }

        /// Mark the worker unhealthy (unless it drains), keeping `message` as why; without one,
        /// the reason it gave before stays. Returns whether it was not unhealthy before (every
        /// beat of an unhealthy worker says so again).
        pub(crate) async fn mark_worker_unhealthy(
            w: &Pool<Db>,
            id: &WorkerId,
            message: Option<&str>,
        ) -> Result<bool> {
            let turned = sqlx::query(
                "UPDATE workers SET status = 'unhealthy', status_message = COALESCE($2, status_message) \
                 WHERE id = $1 AND status NOT IN ('draining', 'unhealthy')",
            )
            .bind(id.as_str())
            .bind(message)
            .execute(w)
            .await?
            .rows_affected();
            if turned > 0 {
                return Ok(true);
            }
            let n = sqlx::query(
                "UPDATE workers SET status_message = COALESCE($2, status_message) \
                 WHERE id = $1 AND status = 'unhealthy'",
            )
            .bind(id.as_str())
            .bind(message)
            .execute(w)
            .await?
            .rows_affected();
            if n == 0 && get_worker(w, id).await?.is_none() {
                return Err(StoreError::not_found("worker", id));
            }
            Ok(false)
        }

        /// Keep what an idle or busy worker says of itself. Its every beat says it again, so
        /// the row is written only when the message changed. An unknown worker is not an error
        /// here: the beat's own lease update says so.
        pub(crate) async fn note_worker(w: &Pool<Db>, id: &WorkerId, message: &str) -> Result<()> {
            sqlx::query(
                "UPDATE workers SET status_message = $2 \
                 WHERE id = $1 AND status IN ('idle', 'busy') AND COALESCE(status_message, '') <> $2",
            )
            .bind(id.as_str())
            .bind(message)
            .execute(w)
            .await?;
            Ok(())
        }

        /// Mark the worker offline and expire its leases, so the next maintenance pass rescues
        /// what it held instead of waiting for the full lease.
        pub(crate) async fn deregister_worker(
            conn: &mut <Db as sqlx::Database>::Connection,
            id: &WorkerId,
            now: i64,
        ) -> Result<()> {
            let n = sqlx::query("UPDATE workers SET status = 'offline' WHERE id = $1")
                .bind(id.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected();
            common::found(n, "worker", id.as_str())?;
            sqlx::query("UPDATE tasks SET lease_expires_at = $1 WHERE state = 'running' AND worker_id = $2")
                .bind(now - 1)
                .bind(id.as_str())
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// A conditional update: replicas running this at once each mark a worker at most once.
        pub(crate) async fn mark_workers_offline(w: &Pool<Db>, threshold: Duration, now: i64) -> Result<u64> {
            Ok(sqlx::query(
                "UPDATE workers SET status = 'offline' \
                 WHERE status <> 'offline' AND last_heartbeat_at < $1",
            )
            .bind(now - dur_ms(threshold))
            .execute(w)
            .await?
            .rows_affected())
        }

        /// One statement; a worker that holds a running task is kept whatever its status says.
        pub(crate) async fn forget_offline_workers(w: &Pool<Db>, after: Duration, now: i64) -> Result<u64> {
            Ok(sqlx::query(
                "DELETE FROM workers WHERE status = 'offline' AND last_heartbeat_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM tasks \
                   WHERE tasks.worker_id = workers.id AND tasks.state = 'running')",
            )
            .bind(now - dur_ms(after))
            .execute(w)
            .await?
            .rows_affected())
        }

        pub(crate) async fn put_project(w: &Pool<Db>, spec: ProjectSpec, now: i64) -> Result<Project> {
            let row = sqlx::query(
                "INSERT INTO projects (name, spec, slots, created_at, updated_at, daily_budget_usd) \
                 VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, \
                 slots = excluded.slots, updated_at = excluded.updated_at, \
                 daily_budget_usd = excluded.daily_budget_usd RETURNING *",
            )
            .bind(&spec.name)
            .bind(json(&spec)?)
            .bind(spec.slots.map(i64::from))
            .bind(now)
            .bind(spec.daily_budget_usd)
            .fetch_one(w)
            .await?;
            project_row(&row)
        }

        pub(crate) async fn get_project(r: &Pool<Db>, name: &str) -> Result<Option<Project>> {
            read_one(r, "SELECT * FROM projects WHERE name = $1", name, project_row).await
        }

        pub(crate) async fn list_projects(r: &Pool<Db>) -> Result<Vec<Project>> {
            read_all(r, "SELECT * FROM projects ORDER BY name", project_row).await
        }

        pub(crate) async fn delete_project(w: &Pool<Db>, name: &str) -> Result<()> {
            write_one(w, "DELETE FROM projects WHERE name = $1", "project", name).await
        }

        pub(crate) async fn put_credential(
            w: &Pool<Db>,
            name: &str,
            ciphertext: Vec<u8>,
            now: i64,
        ) -> Result<()> {
            sqlx::query(
                "INSERT INTO credentials (name, ciphertext, created_at, updated_at) \
                 VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO UPDATE SET \
                 ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(ciphertext)
            .bind(now)
            .execute(w)
            .await?;
            Ok(())
        }

        pub(crate) async fn get_credential(r: &Pool<Db>, name: &str) -> Result<Option<Vec<u8>>> {
            Ok(
                sqlx::query_scalar("SELECT ciphertext FROM credentials WHERE name = $1")
                    .bind(name)
                    .fetch_optional(r)
                    .await?,
            )
        }

        pub(crate) async fn list_credentials(r: &Pool<Db>) -> Result<Vec<String>> {
            Ok(
                sqlx::query_scalar("SELECT name FROM credentials ORDER BY name")
                    .fetch_all(r)
                    .await?,
            )
        }

        pub(crate) async fn delete_credential(w: &Pool<Db>, name: &str) -> Result<()> {
            write_one(w, "DELETE FROM credentials WHERE name = $1", "credential", name).await
        }

        pub(crate) async fn put_profile(w: &Pool<Db>, p: &agentpool_core::Profile, now: i64) -> Result<()> {
            sqlx::query(
                "INSERT INTO profiles (name, settings, created_at, updated_at) \
                 VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO UPDATE SET \
                 settings = excluded.settings, updated_at = excluded.updated_at",
            )
            .bind(&p.name)
            .bind(json(&p.settings)?)
            .bind(now)
            .execute(w)
            .await?;
            Ok(())
        }

        fn profile_of(name: String, settings: &str) -> Result<agentpool_core::Profile> {
            let settings = serde_json::from_str(settings)
                .map_err(|e| StoreError::Corrupt(format!("profile {name}: {e}")))?;
            Ok(agentpool_core::Profile { name, settings })
        }

        pub(crate) async fn get_profile(r: &Pool<Db>, name: &str) -> Result<Option<agentpool_core::Profile>> {
            let s: Option<String> = sqlx::query_scalar("SELECT settings FROM profiles WHERE name = $1")
                .bind(name)
                .fetch_optional(r)
                .await?;
            s.map(|s| profile_of(name.to_string(), &s)).transpose()
        }

        pub(crate) async fn list_profiles(r: &Pool<Db>) -> Result<Vec<agentpool_core::Profile>> {
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT name, settings FROM profiles ORDER BY name")
                    .fetch_all(r)
                    .await?;
            rows.into_iter().map(|(n, s)| profile_of(n, &s)).collect()
        }

        pub(crate) async fn delete_profile(w: &Pool<Db>, name: &str) -> Result<()> {
            write_one(w, "DELETE FROM profiles WHERE name = $1", "profile", name).await
        }

        pub(crate) async fn create_token(w: &Pool<Db>, t: TokenRecord) -> Result<()> {
            let r = sqlx::query(
                "INSERT INTO tokens (id, name, role, hash, created_at, revoked, projects, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.role)
            .bind(&t.hash)
            .bind(common::ms(t.created_at))
            .bind(t.revoked)
            .bind(common::json(&t.projects)?)
            .bind(t.expires_at.map(common::ms))
            .execute(w)
            .await;
            common::token_created(r)
        }

        pub(crate) async fn find_token(r: &Pool<Db>, hash: &str) -> Result<Option<TokenRecord>> {
            read_one(r, "SELECT * FROM tokens WHERE hash = $1", hash, token_row).await
        }

        pub(crate) async fn list_tokens(r: &Pool<Db>) -> Result<Vec<TokenRecord>> {
            read_all(r, "SELECT * FROM tokens ORDER BY created_at, id", token_row).await
        }

        pub(crate) async fn expire_token(w: &Pool<Db>, id: &str, at: Timestamp) -> Result<()> {
            let n = sqlx::query(
                "UPDATE tokens SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > $2 \
                   THEN $2 ELSE expires_at END WHERE id = $1",
            )
            .bind(id)
            .bind(common::ms(at))
            .execute(w)
            .await?
            .rows_affected();
            common::found(n, "token", id)
        }

        /// Note a use, unless one was noted since `since` (so busy tokens write once a while).
        pub(crate) async fn touch_token(
            w: &Pool<Db>,
            id: &str,
            at: Timestamp,
            since: Timestamp,
        ) -> Result<()> {
            sqlx::query(
                "UPDATE tokens SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(id)
            .bind(common::ms(at))
            .bind(common::ms(since))
            .execute(w)
            .await?;
            Ok(())
        }

        pub(crate) async fn revoke_token(w: &Pool<Db>, id: &str) -> Result<()> {
            write_one(w, "UPDATE tokens SET revoked = TRUE WHERE id = $1", "token", id).await
        }
    };
}
pub(crate) use registry_queries;

/// Whether a worker online could run a task, and when none can, what those that offer its agent
/// and labels lack.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct WorkersThatCanRun {
    pub any: bool,
    /// How many that could are unhealthy.
    pub unhealthy: u32,
    /// Some that offer its agent and labels take other projects' tasks only.
    pub other_projects: bool,
    /// Some healthy ones offer all it needs but the reading of local repositories.
    pub local_repos_not_read: bool,
}
