//! What an agent CLI needs to authenticate, declared by each adapter and checked before the
//! CLI starts. Without it the CLIs do not fail fast or clearly: Claude Code answers "Not logged
//! in · Please run /login" as if it were a model reply, Codex and OpenCode try the network and
//! retry, so the task would burn its attempts on an error no retry can fix. The check fails
//! the run at once with [`AgentError::NotAuthenticated`] (class `AUTH_FAILED`) and a message
//! that names the fix.

use std::path::Path;

use crate::{AgentError, AgentRequest};

/// One way an agent can authenticate; a run needs any one of an adapter's [`AuthNeeds`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSource {
    /// An environment variable holding a key or token (non-empty).
    Key(&'static str),
    /// A variable that hands authentication to something else (a cloud provider's own
    /// credential chain, e.g. Claude Code on Bedrock): set and not `0`/`false`.
    Switch(&'static str),
    /// A file the CLI's own login writes, relative to the agent's HOME.
    LoginFile(&'static str),
}

/// What an agent needs to authenticate for one request: any one of `sources`. `None` from an
/// adapter means it needs nothing it can check (a plain command, a provider without keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthNeeds {
    pub sources: Vec<AuthSource>,
    /// Why these and not others (e.g. "the endpoint in OPENAI_BASE_URL"), for the message.
    pub context: Option<&'static str>,
}

impl AuthNeeds {
    pub fn any_of(sources: impl IntoIterator<Item = AuthSource>) -> Self {
        Self {
            sources: sources.into_iter().collect(),
            context: None,
        }
    }

    pub fn because(mut self, context: &'static str) -> Self {
        self.context = Some(context);
        self
    }

    /// Whether `source` is present for this request: variables come only from the request
    /// (agents start with a cleared environment), login files only from its private home.
    pub fn present(source: &AuthSource, request: &AgentRequest) -> bool {
        let var = |name: &str| request.env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        match source {
            AuthSource::Key(name) => var(name).is_some(),
            AuthSource::Switch(name) => var(name).is_some_and(|v| !matches!(v, "0" | "false")),
            AuthSource::LoginFile(rel) => is_nonempty_file(&request.home.join(rel)),
        }
    }

    /// `Ok` when any source is present; else the error that names the fix.
    pub fn check(&self, agent: &str, request: &AgentRequest) -> Result<(), AgentError> {
        if self.sources.is_empty() || self.sources.iter().any(|s| Self::present(s, request)) {
            return Ok(());
        }
        Err(AgentError::NotAuthenticated(self.message(agent)))
    }

    fn message(&self, agent: &str) -> String {
        let (mut keys, mut logins) = (Vec::new(), Vec::new());
        for source in &self.sources {
            match source {
                AuthSource::Key(k) => keys.push(*k),
                AuthSource::LoginFile(f) => logins.push(*f),
                AuthSource::Switch(_) => {}
            }
        }
        let mut m = format!("{agent} has no credentials");
        if let Some(c) = self.context {
            m.push_str(&format!(" for {c}"));
        }
        match keys.first() {
            Some(first) => {
                m.push_str(&format!(": the task's environment has no {}", keys.join(" or ")));
                if !logins.is_empty() {
                    m.push_str(&format!(" and its home no login ({})", logins.join(", ")));
                }
                let credential = first.to_ascii_lowercase();
                m.push_str(&format!(
                    ". Store the key (`printenv {first} | agentpool credentials put {credential}`) \
                     and name it on the task (`--credential {credential}`) or its project"
                ));
            }
            None => m.push_str(&format!(": no login found ({})", logins.join(", "))),
        }
        m
    }
}

fn is_nonempty_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(env: &[(&str, &str)]) -> (tempfile::TempDir, AgentRequest) {
        let dir = tempfile::tempdir().unwrap();
        let mut r = AgentRequest::new("p", dir.path(), dir.path().join("home"));
        for (k, v) in env {
            r.env.insert((*k).into(), (*v).into());
        }
        (dir, r)
    }

    fn needs() -> AuthNeeds {
        AuthNeeds::any_of([
            AuthSource::Key("X_API_KEY"),
            AuthSource::Switch("X_USE_CLOUD"),
            AuthSource::LoginFile(".x/login.json"),
        ])
    }

    #[test]
    fn any_one_source_is_enough() {
        let (_d, r) = request(&[("X_API_KEY", "k")]);
        assert!(needs().check("x", &r).is_ok());
        let (_d, r) = request(&[("X_USE_CLOUD", "1")]);
        assert!(needs().check("x", &r).is_ok());
        let (_d, r) = request(&[]);
        std::fs::create_dir_all(r.home.join(".x")).unwrap();
        std::fs::write(r.home.join(".x/login.json"), "{}").unwrap();
        assert!(needs().check("x", &r).is_ok());
    }

    #[test]
    fn empty_values_and_switched_off_switches_do_not_count() {
        let (_d, r) = request(&[("X_API_KEY", "  "), ("X_USE_CLOUD", "0"), ("OTHER_KEY", "k")]);
        let err = needs().check("x", &r).unwrap_err();
        assert_eq!(err.class(), agentpool_core::ErrorClass::AuthFailed);
        let msg = err.to_string();
        assert!(msg.contains("X_API_KEY"), "{msg}");
        assert!(msg.contains(".x/login.json"), "{msg}");
        assert!(msg.contains("agentpool credentials put x_api_key"), "{msg}");
        assert!(
            !msg.contains("X_USE_CLOUD"),
            "switches are not offered as the fix: {msg}"
        );
    }

    #[test]
    fn no_sources_means_nothing_to_check() {
        let (_d, r) = request(&[]);
        assert!(AuthNeeds::any_of([]).check("x", &r).is_ok());
    }
}
