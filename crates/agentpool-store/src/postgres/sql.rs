//! The SQL text the PostgreSQL store prepares once per store: the NOTIFY channel and the
//! advisory-lock key (both per schema), and the claim, completion and enqueue statements
//! with their column lists assembled. The claim and completion statements share their
//! pieces (which rows, the update, the events), each written once below.

use crate::common::{self, TASK_COLS};
use crate::shared::claim::Candidates;

/// The NOTIFY channel that says "work may be available" (suffixed with the schema when it is
/// not `public`, so queues in different schemas of one database do not wake each other).
const CHANNEL_PREFIX: &str = "agentpool_work";
/// Advisory lock key serializing claims of constrained tasks (branch locks, project slots).
const CONSTRAINED_CLAIM_LOCK: i64 = 0x0061_7063_6c61_696d; // "apclaim"

/// The task columns ([`TASK_COLS`]), each prefixed with `p` (a table alias and a dot, or "").
pub(super) fn cols(p: &str) -> String {
    TASK_COLS
        .split(", ")
        .map(|c| format!("{p}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The CTE of a claim statement (after `upd`, the claimed rows) that appends their `claimed`
/// lifecycle events; `$1` is now.
const CLAIMED_EVENTS: &str = "ev AS (INSERT INTO events (task_id, at, kind, data) \
    SELECT id, $1, 'lifecycle', \
      json_build_object('state', 'claimed', 'attempt', attempts, 'worker', worker_id)::text \
    FROM upd)";

/// The `picked` CTE of a hot-path claim: up to `$5` unconstrained queued tasks due at `$1`
/// that agents `$2` with labels `$3` can run (dedicated to it, when it is dedicated), in claim
/// order, row-locked and skipping rows another claim holds; `worker_ok` is the condition that
/// worker `$4` may claim. A worker limited to projects (`$7` not NULL) takes none:
/// unconstrained tasks have no project, and the condition on the parameter alone is checked
/// once, not per row.
fn picked(worker_ok: &str) -> String {
    format!(
        "picked AS ( \
           SELECT id FROM tasks \
           WHERE state = 'queued' AND deps_pending = 0 AND NOT constrained \
             AND $7::text[] IS NULL AND run_after <= $1 \
             AND (required_agent = ANY($2::text[]) \
                  OR (required_agent IS NULL AND '*' = ANY($2::text[]))) \
             AND (labels IS NULL OR labels <@ $3::jsonb) \
             AND {dedicated} \
             AND {given_back} \
             AND {worker_ok} \
           ORDER BY priority DESC, run_after, id \
           LIMIT $5 \
           FOR UPDATE SKIP LOCKED)",
        given_back = common::not_given_back_by("", "$4", "$1"),
        dedicated = dedicated_to("", "$3"),
    )
}

/// A condition true when task `{t}` may go to a worker with the labels bound at `param`:
/// always, unless the worker is dedicated, then only when the task carries its dedication.
fn dedicated_to(t: &str, param: &str) -> String {
    let key = format!("'{}'", agentpool_core::spec::DEDICATED_LABEL);
    format!("({param}::jsonb -> {key} IS NULL OR {t}labels -> {key} = {param}::jsonb -> {key})")
}

/// The `upd` CTE that claims the rows `which` selects (a `FROM`/`WHERE` tail of the update)
/// for worker `worker` until `expires` (placeholders), `$1` being now, followed by the CTE
/// appending their `claimed` events.
fn claim_upd(worker: &str, expires: &str, which: &str) -> String {
    format!(
        "upd AS ( \
           UPDATE tasks t SET state = 'running', attempts = t.attempts + 1, \
             lease_token = t.lease_token + 1, worker_id = {worker}, lease_expires_at = {expires}, \
             started_at = $1, updated_at = $1, cancel_requested = false, avoid_worker = NULL \
           {which} \
           RETURNING {tc}), \
         {CLAIMED_EVENTS}",
        tc = cols("t.")
    )
}

/// A completion of the leases bound as arrays (`$1` ids, `$2` tokens, `$3` results) held by
/// worker `$5`, now `$4`, with their `succeeded` events (`$6` the event data): the rows also
/// satisfying `also` are completed, `done` returns `returning` of them.
fn completion(also: &str, returning: &str) -> String {
    format!(
        "WITH i AS (SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[]) \
                    AS i(id, token, result)), \
         done AS ( \
           UPDATE tasks t SET state = 'succeeded', finished_at = $4, updated_at = $4, \
             lease_expires_at = NULL, result = i.result, error_class = NULL, \
             error_message = NULL \
           FROM i WHERE t.id = i.id AND t.lease_token = i.token AND t.worker_id = $5 \
             AND t.state = 'running'{also} \
           RETURNING {r}), \
         ev AS (INSERT INTO events (task_id, at, kind, data) \
           SELECT id, $4, 'lifecycle', $6 FROM done) \
         SELECT {returning} FROM done",
        r = returning
            .split(", ")
            .map(|c| format!("t.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The enqueue statement: tasks bound as arrays (`$2`…`$17`, now `$1`), the `queued` event
/// (`$18`) of each but those failed at once by a failed dependency (the caller writes theirs,
/// which name it), and a NOTIFY of `$19` to channel `lit`. With `handover`, a row with a
/// hand-over worker (`$20`, lease expiry `$21`, `claimed` event `$22`) that may claim is
/// inserted already claimed by it: attempt 1, lease token 1.
/// Without, the statement is the plain insert, so the common enqueue plans and runs no more.
fn enqueue(lit: &str, handover: bool) -> String {
    let (arrays, names, h) = if handover {
        (
            ", $20::text[], $21::bigint[], $22::text[]",
            ", hw, hexp, hev",
            "(u.hw IS NOT NULL AND EXISTS (SELECT 1 FROM workers w \
               WHERE w.id = u.hw AND w.status NOT IN ('draining', 'unhealthy')))",
        )
    } else {
        ("", "", "FALSE")
    };
    let (claim_cols, state, claim_vals, claimed_events) = if handover {
        (
            ", attempts, lease_token, worker_id, lease_expires_at, started_at",
            "CASE WHEN i.h THEN 'running' ELSE i.state END",
            ", CASE WHEN i.h THEN 1 ELSE 0 END, CASE WHEN i.h THEN 1 ELSE 0 END, \
             CASE WHEN i.h THEN i.hw END, CASE WHEN i.h THEN i.hexp END, CASE WHEN i.h THEN $1 END",
            " UNION ALL SELECT ins.id, 1, i.hev FROM ins JOIN i ON i.id = ins.id \
              WHERE ins.state = 'running'",
        )
    } else {
        ("", "i.state", "", "")
    };
    format!(
        "WITH i AS ( \
           SELECT u.*, {h} AS h \
           FROM unnest($2::uuid[], $3::text[], $4::text[], $5::int[], $6::bigint[], \
             $7::int[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bool[], \
             $13::int[], $14::text[], $15::text[], $16::text[], $17::bigint[]{arrays}) \
             AS u(id, spec, state, priority, run_after, max_attempts, required_agent, \
               labels, project, lock_key, constrained, deps_pending, idem, error_class, \
               error_message, finished_at{names})), \
         ins AS ( \
           INSERT INTO tasks (id, spec, state, priority, run_after, created_at, \
             updated_at, max_attempts, required_agent, labels, project, lock_key, \
             constrained, deps_pending, idempotency_key, error_class, error_message, \
             finished_at{claim_cols}) \
           SELECT i.id, i.spec, {state}, i.priority, i.run_after, $1, $1, \
             i.max_attempts, i.required_agent, i.labels::jsonb, i.project, i.lock_key, \
             i.constrained, i.deps_pending, i.idem, i.error_class, i.error_message, \
             i.finished_at{claim_vals} \
           FROM i \
           ON CONFLICT ((COALESCE(project, '')), idempotency_key) WHERE idempotency_key IS NOT NULL \
             DO NOTHING \
           RETURNING id, state), \
         ev AS (INSERT INTO events (task_id, at, kind, data) \
           SELECT e.id, $1, 'lifecycle', e.data FROM ( \
             SELECT id, 0 AS o, $18 AS data FROM ins WHERE state <> 'failed'{claimed_events}) e \
           ORDER BY e.o) \
         SELECT ins.id, ins.state, \
           (SELECT count(*) FROM (SELECT pg_notify('{lit}', $19)) AS n) AS notified \
         FROM ins"
    )
}

#[derive(Debug)]
pub(super) struct Sql {
    pub(super) channel: String,
    /// Advisory lock key for constrained claims, distinct per schema.
    pub(super) claim_lock: i64,
    pub(super) claim_hot: String,
    /// The hot claim guarded by the constrained-work probe and reading the worker's status:
    /// the whole claim in one round trip when no constrained task waits.
    pub(super) claim_first: String,
    /// The constrained tasks a claim may take, checked against branch locks, project slots
    /// and budgets (in the serialized step).
    pub(super) claim_candidates: String,
    /// The queued constrained tasks any worker could claim now, checked as `claim_candidates`
    /// checks them (`$1` now, `$2` the projects or NULL, `$3` the budget day, `$4` the limit).
    pub(super) runnable: String,
    pub(super) claim_update: String,
    /// Completion of leases whose tasks need nothing more (no dependents, no lock or slot to
    /// free): one autocommitted statement.
    pub(super) complete_plain: String,
    /// Completion of any leases, returning what each completed task frees (run in a
    /// transaction that releases its dependents).
    pub(super) complete_any: String,
    /// The insert of a batch of tasks with their `queued` events and the NOTIFY.
    pub(super) enqueue: String,
    /// The same, with some tasks inserted already claimed (handed over to waiting claimers).
    pub(super) enqueue_handover: String,
    /// The tasks of some (project or `''`, idempotency key) pairs: what a batch's keys matched.
    pub(super) by_idempotency: String,
}

impl Sql {
    pub(super) fn new(schema: &str) -> Self {
        let channel: String = if schema == "public" || schema.is_empty() {
            CHANNEL_PREFIX.to_string()
        } else {
            format!("{CHANNEL_PREFIX}_{schema}").chars().take(63).collect()
        };
        // FNV-1a: stable across processes and versions, unlike std's hasher.
        let hash = schema.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let claim_lock = CONSTRAINED_CLAIM_LOCK ^ (hash as i64);
        let lit = channel.replace('\'', "''");
        let c = cols("");
        let from_picked = "FROM picked WHERE t.id = picked.id";
        Self {
            channel,
            claim_lock,
            // The claimed events are written by the claim statement itself: no extra round trip.
            claim_hot: format!(
                "WITH {picked}, {upd} SELECT {c} FROM upd",
                picked = picked(
                    "EXISTS (SELECT 1 FROM workers WHERE id = $4 AND status NOT IN ('draining', 'unhealthy'))"
                ),
                upd = claim_upd("$4", "$6", from_picked),
            ),
            claim_first: format!(
                "WITH probe AS ( \
                   SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 'queued' AND deps_pending = 0 \
                       AND constrained AND run_after <= $1) AS constrained_waiting, \
                     (SELECT status FROM workers WHERE id = $4) AS worker_status), \
                 {picked}, {upd} \
                 SELECT p.constrained_waiting, p.worker_status, {uc} \
                 FROM probe p LEFT JOIN upd u ON true",
                picked = picked(
                    "NOT (SELECT constrained_waiting FROM probe) \
                     AND (SELECT worker_status FROM probe) NOT IN ('draining', 'unhealthy')"
                ),
                upd = claim_upd("$4", "$6", from_picked),
                uc = cols("u.")
            ),
            complete_plain: completion(" AND NOT t.has_dependents AND NOT t.constrained", "id"),
            complete_any: completion("", "id, has_dependents, constrained, project"),
            claim_candidates: Candidates {
                filters: &format!(
                    "t.state = 'queued' AND t.deps_pending = 0 AND t.constrained \
                     AND t.run_after <= $1 \
                     AND (t.required_agent = ANY($2::text[]) \
                          OR (t.required_agent IS NULL AND '*' = ANY($2::text[]))) \
                     AND (t.labels IS NULL OR t.labels <@ $3::jsonb) AND {} \
                     AND ($7::text[] IS NULL OR t.project = ANY($7::text[])) AND {}",
                    dedicated_to("t.", "$3"),
                    common::not_given_back_by("t.", "$4", "$1")
                ),
                since: "$6",
                also: " AND EXISTS (SELECT 1 FROM workers WHERE id = $4 \
                       AND status NOT IN ('draining', 'unhealthy'))",
                limit: "$5",
            }
            .sql(),
            runnable: Candidates {
                filters: "t.state = 'queued' AND t.deps_pending = 0 AND t.constrained \
                          AND t.run_after <= $1 AND ($2::text[] IS NULL OR t.project = ANY($2::text[]))",
                since: "$3",
                also: "",
                limit: "$4",
            }
            .sql(),
            claim_update: format!(
                "WITH {upd} SELECT {c} FROM upd",
                upd = claim_upd("$2", "$3", "WHERE t.id = ANY($4::uuid[]) AND t.state = 'queued'"),
            ),
            enqueue: enqueue(&lit, false),
            enqueue_handover: enqueue(&lit, true),
            by_idempotency: format!(
                "SELECT {c}, idempotency_key, COALESCE(project, '') AS key_scope FROM tasks \
                 WHERE (COALESCE(project, ''), idempotency_key) IN \
                   (SELECT * FROM unnest($1::text[], $2::text[]))"
            ),
        }
    }
}
