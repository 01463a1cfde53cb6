//! Identifiers: sortable task ids, worker ids and the fencing token of a lease.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A task id: a UUIDv7, so ids sort by creation time and make good cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub Uuid);

impl TaskId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A string that is not a task id; says what one looks like, since people type them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a task id (a UUID, like 01a23901-c4f9-755d-9c9c-aa7fc317e16a)")]
pub struct InvalidTaskId(String);

impl FromStr for TaskId {
    type Err = InvalidTaskId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidTaskId(s.chars().take(64).collect()))
    }
}

/// A worker id: chosen by the worker at registration (usually host name + random suffix) or
/// assigned by the server. Restricted to a URL- and log-safe alphabet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkerId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid worker id {0:?}: use 1-128 characters from [A-Za-z0-9._-]")]
pub struct InvalidWorkerId(String);

impl WorkerId {
    pub fn parse(s: impl Into<String>) -> Result<Self, InvalidWorkerId> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok { Ok(Self(s)) } else { Err(InvalidWorkerId(s)) }
    }

    /// A fresh id for a worker on `host`: host name (sanitised) plus a random suffix.
    pub fn generate(host: &str) -> Self {
        let clean: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        let suffix = Uuid::now_v7().simple().to_string();
        let host = if clean.is_empty() {
            "worker".to_string()
        } else {
            clean
        };
        Self(format!("{host}-{}", &suffix[suffix.len() - 8..]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WorkerId {
    type Error = InvalidWorkerId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<WorkerId> for String {
    fn from(w: WorkerId) -> String {
        w.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fencing token of a lease. Every claim of a task increments it, so a worker whose lease
/// expired and whose task was claimed again holds a smaller token than the current one, and
/// every call it makes with that token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(pub i64);

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a worker presents to act on a task it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    pub task_id: TaskId,
    pub token: LeaseToken,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_sort_by_creation() {
        let a = TaskId::new();
        let b = TaskId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<TaskId>().ok(), Some(a));
        let e = "01a2390".parse::<TaskId>().unwrap_err().to_string();
        assert!(e.starts_with("\"01a2390\" is not a task id (a UUID"), "{e}");
    }

    #[test]
    fn worker_ids_are_validated() {
        assert!(WorkerId::parse("w-1.local_2").is_ok());
        assert!(WorkerId::parse("").is_err());
        assert!(WorkerId::parse("a/b").is_err());
        assert!(WorkerId::parse("x".repeat(129)).is_err());
        let g = WorkerId::generate("my host!");
        assert!(g.as_str().starts_with("my-host--"));
        assert!(WorkerId::parse(g.as_str()).is_ok());
    }
}
