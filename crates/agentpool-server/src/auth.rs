//! Bearer-token authentication and role checks. Tokens are random, shown once, and stored only
//! as their SHA-256; a short in-memory cache keeps the hot worker path off the token table.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
pub async fn create_unique_token(store: &dyn Store, role: Role, name: &str) -> Result<NewToken, StoreError> {
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
    create_token(store, role, name).await
}

/// Cache of token hash → caller. A revoked token stops working within [`Authenticator::CACHE_TTL`].
pub struct Authenticator {
    mode: AuthMode,
    cache: Mutex<HashMap<String, (Option<Caller>, Instant)>>,
}

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

    /// Who `token` is (its role and name), or `None` for an unknown or revoked one.
    pub(crate) async fn caller_of(&self, store: &dyn Store, token: &str) -> Result<Option<Caller>, ApiError> {
        let hash = hash_token(token);
        if let Ok(cache) = self.cache.lock()
            && let Some((caller, at)) = cache.get(&hash)
            && at.elapsed() < Self::CACHE_TTL
        {
            return Ok(caller.clone());
        }
        let caller = match store.find_token(&hash).await? {
            Some(rec) if !rec.revoked => rec.role.parse::<Role>().ok().map(|role| Caller {
                role,
                name: rec.name.into(),
                authenticated: true,
            }),
            _ => None,
        };
        if let Ok(mut cache) = self.cache.lock() {
            // Unknown tokens are cached too, so a client hammering with a bad token costs no
            // queries; the size cap keeps that from growing without bound.
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(hash, (caller.clone(), Instant::now()));
        }
        Ok(caller)
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
}

impl Caller {
    /// The caller of an embedded pool without auth (loopback only).
    pub fn loopback() -> Self {
        Self {
            role: Role::Admin,
            name: "loopback".into(),
            authenticated: false,
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
}
