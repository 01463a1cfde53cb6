//! Test support shared by agentpool's crates. Everything here builds real things: fresh
//! databases on the test PostgreSQL, git repositories and a smart-HTTP git server with auth,
//! a one-tool MCP server, the shipped alerting rules read and checked against a scrape, the
//! dashboard's browser scripts run in Chromium;
//! and, re-exported as [`model`], the scripted model endpoint the real agent CLIs talk to
//! (its own crate, because the demo uses it too).

pub mod alerts;
pub mod bench;
pub mod browser;
pub mod db;
pub mod forgejo;
pub mod git;
pub mod github;
pub mod mcp;
pub mod process;
pub mod worker;

pub use agentpool_scripted_model as model;

/// Whether the test run requires external services (set by `scripts/test` and CI). When set, a
/// test that cannot find a service fails instead of skipping.
pub fn services_required() -> bool {
    std::env::var_os("AGENTPOOL_TEST_REQUIRE_SERVICES").is_some() || std::env::var_os("CI").is_some()
}

/// One test module per agent CLI (`claude_code`, `codex`, `opencode`, `gemini`), each with one
/// multi-threaded tokio test per named scenario: `async fn scenario(agent: &str)` in the calling
/// module, run with the agent's name.
#[macro_export]
macro_rules! for_each_agent {
    ($($scenario:ident),+ $(,)?) => {
        $crate::for_each_agent!(@agent claude_code, "claude-code", $($scenario),+);
        $crate::for_each_agent!(@agent codex, "codex", $($scenario),+);
        $crate::for_each_agent!(@agent opencode, "opencode", $($scenario),+);
        $crate::for_each_agent!(@agent gemini, "gemini", $($scenario),+);
    };
    (@agent $module:ident, $agent:literal, $($scenario:ident),+) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($agent).await;
                }
            )+
        }
    };
}
