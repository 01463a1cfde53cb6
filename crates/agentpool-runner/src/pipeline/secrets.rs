//! The secrets of one task, and masking them in everything a run sends out: its events (the
//! redactor the event buffer applies), its output lines before they are cut to size, and the
//! result reported at the end.

use agentpool_core::{Redactor, TaskResult};

use super::Pipeline;
use crate::api::ClaimedWork;

impl Pipeline {
    /// Every secret value a run of `work` may see: its credentials, the worker's git token,
    /// the variables passed as secret (`--agent-env`), and the tokens in the login files lent
    /// to its agents (`--use-local-login`). The login files are read now, so a token an
    /// earlier run refreshed is among them. Every lent agent's tokens are taken, not only those
    /// of the agent the task names: the task's process can read whatever is copied into its
    /// home, and masking tokens it never meets costs nothing.
    pub fn secrets_for(&self, work: &ClaimedWork) -> Vec<String> {
        let credentials = work.credentials.iter().map(|(_, v)| v.to_string());
        let git = self
            .cfg
            .git_credentials
            .iter()
            .map(|c| c.token.expose().to_string());
        let passed = self.cfg.secret_env.values().cloned();
        let logins = self
            .cfg
            .local_logins
            .iter()
            .flat_map(|(agent, home)| agentpool_agents::login::local_secrets(agent, home));
        credentials.chain(git).chain(passed).chain(logins).collect()
    }

    /// The redactor of a run of `work` ([`Pipeline::secrets_for`]).
    pub fn redactor_for(&self, work: &ClaimedWork) -> Redactor {
        Redactor::new(self.secrets_for(work))
    }
}

/// Mask the secrets in every text of `result` that the run produced: the agent's final text,
/// the checks' output and failing tests, the changed files' paths (a file can be named after
/// a secret), the push's outcome and the branch.
pub(super) fn redact_result(redactor: &Redactor, result: &mut TaskResult) {
    if redactor.is_empty() {
        return;
    }
    let mask = |s: &mut String| *s = redactor.redact(s);
    for run in &mut result.checks {
        mask(&mut run.output_tail);
        run.failed_tests.iter_mut().for_each(mask);
    }
    result.final_text.iter_mut().for_each(mask);
    result.files.iter_mut().for_each(|f| mask(&mut f.path));
    result.push_result.iter_mut().for_each(mask);
    result.branch.iter_mut().for_each(mask);
}
