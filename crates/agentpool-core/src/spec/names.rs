//! Repository URLs and branch names: the newtypes that make a task's git inputs safe to hand
//! to git, and the invisible characters they refuse.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ValidationError;
use crate::TaskId;

/// A repository URL that is safe to hand to git.
///
/// Allowed: `https://`, `http://`, `ssh://`, scp-like `user@host:path`, and — only when the
/// operator allows local repositories — `file://` URLs and absolute paths. Refused: `ext::` and
/// other remote-helper transports, values that look like options (`-…`), control characters,
/// and credentials embedded in the URL (they would end up in logs). A worker sends no git
/// credential over plain `http://` to another machine ([`RepoUrl::clear_text_host`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RepoUrl(String);

impl RepoUrl {
    /// Whether `s` names a repository on the local filesystem (a `file://` URL or an absolute
    /// path), which only an operator's opt-in allows.
    pub fn names_local(s: &str) -> bool {
        let s = s.trim();
        s.starts_with('/') || s.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("file://"))
    }

    /// The host of a plain `http://` URL whose host is not this machine: a credential sent
    /// there crosses the network in clear text. `None` for any other URL.
    pub fn clear_text_host(s: &str) -> Option<&str> {
        let s = s.trim();
        let rest = s
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("http://"))
            .map(|_| &s[7..])?;
        let authority = rest.split('/').next().unwrap_or("");
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host_port.split(':').next().unwrap_or(""),
        };
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        (!loopback).then_some(host)
    }

    pub fn parse(s: &str, allow_local: bool) -> Result<Self, ValidationError> {
        let err = |m: &str| Err(ValidationError::new("repo", m));
        let s = s.trim();
        if s.is_empty() {
            return err("is required");
        }
        if s.len() > 2048 {
            return err("is longer than 2048 characters");
        }
        if s.starts_with('-') {
            return err("must not start with '-'");
        }
        if s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || is_invisible(c))
        {
            return err("must not contain whitespace, control or invisible (bidi, zero-width) characters");
        }
        if s.contains("::") {
            return err("remote-helper transports (such as ext::) are not allowed");
        }
        let lower = s.to_ascii_lowercase();
        if let Some(rest) = ["https://", "http://", "ssh://"]
            .iter()
            .find_map(|p| lower.strip_prefix(p))
        {
            let authority = rest.split('/').next().unwrap_or("");
            if authority.is_empty() {
                return err("has no host");
            }
            // ssh reads a host or user that starts with '-' as an option
            // (`ssh://-oProxyCommand=…`, `ssh://git@-oProxyCommand=…`).
            let (user, host) = authority.rsplit_once('@').unwrap_or(("", authority));
            if host.is_empty() || host.starts_with('-') || user.starts_with('-') {
                return err("host and user must not be empty or start with '-'");
            }
            // ssh:// may name its user (`git@`), not a password (`git:TOKEN@`).
            if authority.contains('@') && (!lower.starts_with("ssh://") || user.contains(':')) {
                return err("must not embed credentials; use a project credential instead");
            }
            return Ok(Self(s.to_string()));
        }
        if Self::names_local(s) {
            if !allow_local {
                return err(
                    "local repositories (file:// or a path) are not enabled on this server \
                     (agentpool serve --allow-local-repos)",
                );
            }
            return Ok(Self(s.to_string()));
        }
        if lower.contains("://") {
            return err("scheme not allowed: use https, ssh, or (when enabled) file");
        }
        // scp-like syntax: user@host:path. A `:` before the `@` is a password
        // (`user:TOKEN@host:path`), which git would send and every listing would show.
        if s.split_once('@').is_some_and(|(user, _)| user.contains(':')) {
            return err("must not embed credentials; use a project credential instead");
        }
        if let Some((userhost, path)) = s.split_once(':')
            && !userhost.is_empty()
            && !path.is_empty()
            && !userhost.contains('/')
        {
            let (user, host) = userhost.rsplit_once('@').unwrap_or(("", userhost));
            if host.is_empty() || host.starts_with('-') || user.starts_with('-') {
                return err("host and user must not be empty or start with '-'");
            }
            return Ok(Self(s.to_string()));
        }
        err("is not a URL git can use: give https://…, ssh://…, user@host:path, or a local path")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a local repository (path or file://).
    pub fn is_local(&self) -> bool {
        Self::names_local(&self.0)
    }

    /// A key that identifies the repository for branch locks, ignoring a trailing `.git` or `/`.
    pub fn lock_key(&self) -> String {
        let s = self.0.trim_end_matches('/');
        s.strip_suffix(".git").unwrap_or(s).to_string()
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A branch name that git accepts (the rules of `git check-ref-format --branch`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BranchName(String);

impl BranchName {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::check(s)
            .map(|()| Self(s.to_string()))
            .map_err(|m| ValidationError::new("branch", m))
    }

    fn check(s: &str) -> Result<(), String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > 255 {
            return Err("is longer than 255 characters".into());
        }
        if s.starts_with('-') {
            return Err("must not start with '-'".into());
        }
        // A full ref would be pushed as refs/heads/refs/heads/…; the name is what is asked.
        if s.starts_with("refs/") {
            return Err(
                "give the branch name without refs/ (e.g. feature/x, not refs/heads/feature/x)".into(),
            );
        }
        if s == "@" || s == "HEAD" {
            return Err(format!("{s:?} is not a branch name"));
        }
        if s.starts_with('/') || s.ends_with('/') || s.contains("//") {
            return Err("must not start or end with '/' or contain '//'".into());
        }
        if s.ends_with('.') {
            return Err("must not end with '.'".into());
        }
        if s.contains("..") || s.contains("@{") {
            return Err("must not contain '..' or '@{'".into());
        }
        for c in s.chars() {
            if c.is_control()
                || is_invisible(c)
                || c == ' '
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\' | '\u{7f}')
            {
                return Err(format!("must not contain {c:?}"));
            }
        }
        for part in s.split('/') {
            if part.starts_with('.') {
                return Err("no path component may start with '.'".into());
            }
            if part.ends_with(".lock") {
                return Err("no path component may end with '.lock'".into());
            }
        }
        Ok(())
    }

    /// The default work branch of a task.
    pub fn for_task(id: TaskId) -> Self {
        Self(format!("agentpool/{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters that change how text is displayed without being visible: bidirectional
/// overrides and isolates (U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+061C), zero-width
/// characters and the byte-order mark. In a URL or branch name they make what a reviewer reads
/// differ from what git uses.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}
