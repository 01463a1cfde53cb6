//! Bearer-token authentication and role checks. Tokens are random, shown once, and stored only
//! as their SHA-256; a short in-memory cache keeps the hot worker path off the token table.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpool_core::protocol::TokenRotate;
use agentpool_core::{Timestamp, ValidationError};
use agentpool_store::{Store, StoreError, TokenRecord};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Tasks, projects and builds.
    Submitter,
    /// The worker protocol only.
    Worker,
}

agentpool_core::enum_names!(Role, UnknownRole("role") {
    Admin => "admin",
    Submitter => "submitter",
    Worker => "worker",
});

/// How the server authenticates callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Bearer tokens from the token table (the default).
    Tokens,
    /// Everyone is admin. Only allowed when listening on a loopback address (embedded mode).
    NoAuthLoopback,
}

/// Prefix of every token, so a leaked one is recognisable by secret scanners.
const TOKEN_PREFIX: &str = "apt_";

/// SHA-256 of a token, hex: the only form in which tokens are stored.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut s = String::with_capacity(64);
    for b in digest {
        use fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A newly created token: the plaintext is shown to the operator once and never stored.
#[derive(Clone)]
pub struct NewToken {
    pub id: String,
    pub plaintext: String,
    pub record: TokenRecord,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("plaintext", &"<redacted>")
            .field("record", &self.record)
            .finish()
    }
}

/// Create a token with `role`, store its hash, and return the plaintext (shown once).
pub async fn create_token(store: &dyn Store, role: Role, name: &str) -> Result<NewToken, StoreError> {
    create_limited_token(store, role, name, TokenLimits::default()).await
}

/// What a token is limited to beyond its role: projects (submitter and worker tokens) and a
/// time it stops working.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenLimits {
    pub projects: Vec<String>,
    pub expires_at: Option<Timestamp>,
}

impl TokenLimits {
    /// Every problem, with its field path: projects only on a submitter or worker token (an
    /// admin token is every project's by its role), each one stored
    /// (a token for a project that does not exist yet is more likely a typo than a plan),
    /// and an expiry in the future.
    pub async fn problems(&self, store: &dyn Store, role: Role) -> Result<Vec<ValidationError>, StoreError> {
        let mut errs = Vec::new();
        if !self.projects.is_empty() && role == Role::Admin {
            errs.push(ValidationError::new(
                "projects",
                "only a submitter or worker token can be limited to projects, not an admin token",
            ));
        }
        let mut stored = std::collections::HashSet::new();
        for p in self.projects.iter().take(MAX_PROJECTS) {
            if agentpool_core::project::valid_name(p) && store.get_project(p).await?.is_some() {
                stored.insert(p.as_str());
            }
        }
        errs.append(&mut project_list_problems(&self.projects, |p| {
            (!stored.contains(p)).then(|| format!("no project named {p}"))
        }));
        if let Some(at) = self.expires_at
            && at <= store.time()
        {
            errs.push(ValidationError::new("expires_at", "must be in the future"));
        }
        Ok(errs)
    }
}

/// How many projects one token (or one worker) may be limited to.
pub const MAX_PROJECTS: usize = 100;

/// The problems of a list of projects a token or a worker is limited to, with their field
/// paths: at most [`MAX_PROJECTS`], each a project name, none named twice, and what `check`
/// says of each well-formed name (a token's must exist).
pub fn project_list_problems(
    projects: &[String],
    check: impl Fn(&str) -> Option<String>,
) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    if projects.len() > MAX_PROJECTS {
        errs.push(ValidationError::new(
            "projects",
            format!("at most {MAX_PROJECTS} projects"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in projects.iter().enumerate().take(MAX_PROJECTS) {
        let problem = if !seen.insert(p) {
            Some(format!("{p} is named twice"))
        } else if !agentpool_core::project::valid_name(p) {
            Some("is not a project name".to_string())
        } else {
            check(p)
        };
        if let Some(why) = problem {
            errs.push(ValidationError::new(format!("projects[{i}]"), why));
        }
    }
    errs
}

/// [`create_token`] with limits, which the caller has checked ([`TokenLimits::problems`]).
pub async fn create_limited_token(
    store: &dyn Store,
    role: Role,
    name: &str,
    limits: TokenLimits,
) -> Result<NewToken, StoreError> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let plaintext = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let record = TokenRecord {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        role: role.as_str().to_string(),
        hash: hash_token(&plaintext),
        created_at: chrono::Utc::now(),
        revoked: false,
        projects: limits.projects,
        expires_at: limits.expires_at,
        last_used_at: None,
    };
    store.create_token(record.clone()).await?;
    Ok(NewToken {
        id: record.id.clone(),
        plaintext,
        record,
    })
}

/// [`create_token`] for a person: refused (`Conflict`) while a token of that name is still
/// valid, so that the name the server's log gives for each change tells who made it.
pub async fn create_unique_token(
    store: &dyn Store,
    role: Role,
    name: &str,
    limits: TokenLimits,
) -> Result<NewToken, StoreError> {
    let taken = store
        .list_tokens()
        .await?
        .into_iter()
        .find(|t| !t.revoked && t.name == name);
    if let Some(t) = taken {
        return Err(StoreError::Conflict(format!(
            "a token named {name} already exists ({}); revoke it first or choose another name",
            t.id
        )));
    }
    create_limited_token(store, role, name, limits).await
}

impl NewToken {
    /// The answer that shows it: the only time its value leaves the server.
    pub fn shown(self) -> agentpool_core::protocol::CreatedToken {
        let r = self.record;
        agentpool_core::protocol::CreatedToken {
            id: self.id,
            name: r.name,
            role: r.role,
            projects: r.projects,
            expires_at: r.expires_at,
            token: self.plaintext,
        }
    }
}

/// Rotate token `id`: create its successor — the same name, role and projects, and as long a
/// life as it had, counted from now — then make it stop working `grace` from now (or when it
/// would have, if sooner). Returns the successor and that time. A revoked or expired token is
/// not rotated (`Conflict`). The successor is created first: should the second write fail,
/// both work and the rotation can be asked again.
pub async fn rotate_token(
    store: &dyn Store,
    id: &str,
    grace: Duration,
) -> Result<agentpool_core::protocol::RotatedToken, StoreError> {
    let Some(old) = store.list_tokens().await?.into_iter().find(|t| t.id == id) else {
        return Err(StoreError::NotFound {
            what: "token",
            id: id.to_string(),
        });
    };
    let now = store.time();
    if old.revoked || old.expires_at.is_some_and(|at| at <= now) {
        let what = if old.revoked { "revoked" } else { "expired" };
        return Err(StoreError::Conflict(format!(
            "token {} is {what}; create a new one",
            old.name
        )));
    }
    let role = old
        .role
        .parse::<Role>()
        .map_err(|e| StoreError::Conflict(format!("token {} cannot be rotated: {e}", old.id)))?;
    // As long a life from now; past the calendar's end (a far expiry given), the same one.
    let expires_at = old
        .expires_at
        .map(|at| now.checked_add_signed(at - old.created_at).unwrap_or(at));
    let limits = TokenLimits {
        projects: old.projects.clone(),
        expires_at,
    };
    // The same name on purpose: the successor is the same caller, and the server's log names it.
    let successor = create_limited_token(store, role, &old.name, limits).await?;
    let grace = grace.min(Duration::from_secs(TokenRotate::MAX_GRACE_SECS));
    let end_of_grace = chrono::Duration::from_std(grace)
        .ok()
        .and_then(|g| now.checked_add_signed(g))
        .unwrap_or(now);
    let until = old.expires_at.map_or(end_of_grace, |at| at.min(end_of_grace));
    store.expire_token(&old.id, until).await?;
    Ok(agentpool_core::protocol::RotatedToken {
        successor: successor.shown(),
        previous_expires_at: until,
    })
}

/// Cache of token hash → caller. A revoked token stops working within [`Authenticator::CACHE_TTL`].
pub struct Authenticator {
    mode: AuthMode,
    cache: Mutex<HashMap<String, (Lookup, Instant)>>,
}

/// What a bearer token turned out to be.
#[derive(Debug, Clone)]
pub(crate) enum Lookup {
    Known(Caller),
    /// Unknown, revoked, or with a role this server does not know.
    Unknown,
    Expired {
        name: Arc<str>,
        at: Timestamp,
    },
}

/// How often a token's use is written down at most (`last_used_at`): a busy token must not
/// turn reads into writes.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

impl Authenticator {
    /// How long a lookup is trusted; bounds how long a revoked token keeps working.
    pub const CACHE_TTL: Duration = Duration::from_secs(5);

    pub fn new(mode: AuthMode) -> Self {
        Self {
            mode,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    pub(crate) async fn role_of(&self, store: &dyn Store, token: &str) -> Result<Option<Role>, ApiError> {
        Ok(self.caller_of(store, token).await?.map(|c| c.role))
    }

    /// The caller a token stands for; `None` when it is unknown, revoked or expired.
    pub(crate) async fn caller_of(&self, store: &dyn Store, token: &str) -> Result<Option<Caller>, ApiError> {
        Ok(match self.lookup(store, token).await? {
            Lookup::Known(c) => Some(c),
            Lookup::Unknown | Lookup::Expired { .. } => None,
        })
    }

    /// The caller a token stands for, or a 401 that says why not.
    pub(crate) async fn authenticate(&self, store: &dyn Store, token: &str) -> Result<Caller, ApiError> {
        match self.lookup(store, token).await? {
            Lookup::Known(c) => Ok(c),
            Lookup::Unknown => Err(ApiError::unauthorized("unknown or revoked token")),
            Lookup::Expired { name, at } => Err(ApiError::unauthorized(format!(
                "token {name} expired at {}; ask an admin for a new one",
                at.format("%Y-%m-%d %H:%M UTC")
            ))),
        }
    }

    pub(crate) async fn lookup(&self, store: &dyn Store, token: &str) -> Result<Lookup, ApiError> {
        let hash = hash_token(token);
        let now = store.time();
        if let Ok(cache) = self.cache.lock()
            && let Some((found, at)) = cache.get(&hash)
            && at.elapsed() < Self::CACHE_TTL
        {
            return Ok(expire(found.clone(), now));
        }
        let found = match store.find_token(&hash).await? {
            Some(rec) if !rec.revoked => match rec.role.parse::<Role>() {
                Ok(role) => {
                    let since = now - chrono::Duration::from_std(TOUCH_EVERY).unwrap_or_default();
                    if rec.last_used_at.is_none_or(|t| t < since)
                        && rec.expires_at.is_none_or(|t| t > now)
                        && let Err(e) = store.touch_token(&rec.id, now, since).await
                    {
                        // Only the "last used" column is lost: the request goes on.
                        tracing::warn!(token = %rec.id, error = %e, "could not note the token's use");
                    }
                    Lookup::Known(Caller {
                        role,
                        name: rec.name.into(),
                        authenticated: true,
                        projects: (!rec.projects.is_empty()).then(|| rec.projects.into()),
                        expires_at: rec.expires_at,
                    })
                }
                Err(_) => Lookup::Unknown,
            },
            _ => Lookup::Unknown,
        };
        if let Ok(mut cache) = self.cache.lock() {
            // Unknown tokens are cached too, so a client hammering with a bad token costs no
            // queries; the size cap keeps that from growing without bound.
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(hash, (found.clone(), Instant::now()));
        }
        Ok(expire(found, now))
    }
}

/// A cached caller whose token has expired since it was looked up is expired now, not when
/// the cache entry runs out.
fn expire(found: Lookup, now: Timestamp) -> Lookup {
    match found {
        Lookup::Known(c) => match c.expires_at {
            Some(at) if at <= now => Lookup::Expired { name: c.name, at },
            _ => Lookup::Known(c),
        },
        other => other,
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The token's name, for the log of who changed what (`loopback` without auth).
    pub name: std::sync::Arc<str>,
    /// Whether a token said who this is; not in an embedded pool without auth, where anyone
    /// on this machine is admin.
    pub authenticated: bool,
    /// The projects a project token is limited to; `None`: every project.
    pub projects: Option<Arc<[String]>>,
    /// When its token expires.
    pub expires_at: Option<Timestamp>,
}

impl Caller {
    /// The caller of an embedded pool without auth (loopback only).
    pub fn loopback() -> Self {
        Self {
            role: Role::Admin,
            name: "loopback".into(),
            authenticated: false,
            projects: None,
            expires_at: None,
        }
    }
}

/// `ci (submitter)`: who did it, as the server log and task messages ("canceled by …") say.
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.authenticated {
            write!(f, "{} ({})", self.name, self.role.as_str())
        } else {
            f.write_str("a local user (no auth)")
        }
    }
}

impl Caller {
    /// 403 unless the caller has one of `roles` (admin always passes).
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            Ok(())
        } else {
            let allowed: Vec<&str> = std::iter::once("admin")
                .chain(roles.iter().filter(|r| **r != Role::Admin).map(|r| r.as_str()))
                .collect();
            Err(ApiError::forbidden(format!(
                "a {} token may not do this; needs role {}",
                self.role,
                allowed.join(" or ")
            ))
            .with_details(serde_json::json!({ "role": self.role, "allowed": allowed })))
        }
    }
}

/// A project token's reach. A task, build or schedule outside it answers as if it did not
/// exist (404: not even its existence is told); naming such a project in a request that
/// would create something is refused (403, naming the projects it may use).
impl Caller {
    /// Whether it reaches something of `project` (`None`: something of no project, which only
    /// tokens for every project reach).
    pub fn reaches(&self, project: Option<&str>) -> bool {
        match &self.projects {
            None => true,
            Some(ps) => project.is_some_and(|p| ps.iter().any(|x| x == p)),
        }
    }

    /// Whether it reaches a worker limited to `projects` (empty: any): a project token
    /// reaches only workers limited to some of its projects, whose leases, drain and
    /// registration are its own to use.
    pub fn reaches_worker(&self, projects: &[String]) -> bool {
        match &self.projects {
            None => true,
            Some(ps) => !projects.is_empty() && projects.iter().all(|p| ps.contains(p)),
        }
    }

    /// 404 unless it reaches the task's project.
    pub fn sees_task(&self, task: &agentpool_core::Task) -> Result<(), ApiError> {
        if self.reaches(task.spec.project.as_deref()) {
            Ok(())
        } else {
            Err(ApiError::not_found("task", task.id))
        }
    }

    /// 403 unless it reaches `project`, for requests that create or change something of it.
    pub fn may_use(&self, project: Option<&str>) -> Result<(), ApiError> {
        if self.reaches(project) {
            return Ok(());
        }
        let ps = self.projects.as_deref().unwrap_or_default().join(", ");
        let what = match project {
            Some(p) => format!("project {p}"),
            None => "tasks without a project".to_string(),
        };
        Err(ApiError::forbidden(format!(
            "token {} is limited to projects {ps}; it may not use {what}",
            self.name
        ))
        .with_details(serde_json::json!({ "projects": self.projects.as_deref().unwrap_or_default() })))
    }

    /// Narrow a task listing to its projects.
    pub fn limit(&self, filter: &mut agentpool_store::TaskFilter) {
        if let Some(ps) = &self.projects {
            filter.projects = Some(ps.to_vec());
        }
    }
}

/// A set of roles an endpoint admits (admin is always admitted).
pub trait Allowed: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// Tasks, projects, builds.
pub struct Submitters;
impl Allowed for Submitters {
    const ROLES: &'static [Role] = &[Role::Submitter];
}

/// The worker protocol.
pub struct Workers;
impl Allowed for Workers {
    const ROLES: &'static [Role] = &[Role::Worker];
}

/// Reading the worker list.
pub struct Readers;
impl Allowed for Readers {
    const ROLES: &'static [Role] = &[Role::Submitter, Role::Worker];
}

/// Credentials: admin only.
pub struct Admins;
impl Allowed for Admins {
    const ROLES: &'static [Role] = &[];
}

/// An authenticated caller whose role is in `A`. As a parts extractor (see `extract`) it runs
/// before the body is read, so an unauthorized caller gets 401/403 without the server parsing
/// its body.
pub struct Authorized<A: Allowed>(pub Caller, pub(crate) std::marker::PhantomData<A>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn admin_passes_every_role_check_and_others_only_their_own() {
        let admin = Caller::loopback();
        let worker = Caller {
            role: Role::Worker,
            name: "pool".into(),
            authenticated: true,
            projects: None,
            expires_at: None,
        };
        assert_eq!(worker.to_string(), "pool (worker)");
        assert_eq!(admin.to_string(), "a local user (no auth)");
        assert!(admin.require(&[Role::Worker]).is_ok());
        assert!(worker.require(&[Role::Worker]).is_ok());
        assert_eq!(
            worker.require(&[Role::Submitter]).err().map(|e| e.status),
            Some(axum::http::StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn a_project_token_reaches_its_projects_only() {
        let web = Caller {
            role: Role::Submitter,
            name: "web-ci".into(),
            authenticated: true,
            projects: Some(vec!["web".to_string(), "docs".to_string()].into()),
            expires_at: None,
        };
        assert!(web.reaches(Some("web")) && web.reaches(Some("docs")));
        assert!(!web.reaches(Some("api")));
        assert!(!web.reaches(None), "a task without a project is no project's");
        assert!(Caller::loopback().reaches(None) && Caller::loopback().reaches(Some("api")));
        let e = web.may_use(Some("api")).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::FORBIDDEN);
        assert_eq!(
            e.message,
            "token web-ci is limited to projects web, docs; it may not use project api"
        );
        let mut f = agentpool_store::TaskFilter::default();
        web.limit(&mut f);
        assert_eq!(f.projects, Some(vec!["web".to_string(), "docs".to_string()]));
        let mut f = agentpool_store::TaskFilter::default();
        Caller::loopback().limit(&mut f);
        assert_eq!(f.projects, None);
    }
}
