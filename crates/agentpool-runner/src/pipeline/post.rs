//! After the run: commit and push what it changed, and say in the result what became of it —
//! which commit, on which branch of the remote, or why it reached none.

use agentpool_core::{ErrorClass, Lifecycle, NewEvent, TaskResult};

use super::failure::finish_failure;
use super::message;
use super::{Failed, Pipeline, Scope, failed};
use crate::git::{AskPass, Git, GitCredentials, GitError};
use crate::workspace::{CommitOptions, FinishError, FinishFault, finish};

/// What the git steps after the run need: git itself, and the task's credentials for the push.
pub(super) struct PostGit<'a> {
    pub(super) git: &'a Git,
    pub(super) askpass: Option<&'a AskPass>,
    pub(super) creds: Option<&'a GitCredentials>,
}

impl Pipeline {
    /// Commit (unless the task says not to), push (likewise) and record the outcome in
    /// `result`, also when a step fails: a failed push still reports its commit (not pushed)
    /// and the files. Its branch is named only when the remote has it: a branch that was never
    /// pushed is nowhere once the workspace is gone.
    pub(super) async fn post_run(
        &self,
        scope: &Scope<'_>,
        git: PostGit<'_>,
        result: &mut TaskResult,
    ) -> Result<(), Failed> {
        let Scope {
            work,
            ws,
            events,
            cancel,
            ..
        } = *scope;
        let task = &work.claimed.task;
        let spec = &task.spec;
        // Read now, after the agent's run: a login token it refreshed is among them.
        let secrets = self.redactor_for(work);
        // The message goes into the remote's history, where nothing masks it later: the agent's
        // final answer in its body (and whatever the task wrote in it) is masked like the
        // result's copy of that answer.
        let message = spec
            .commit_message
            .clone()
            .unwrap_or_else(|| message::default_message(task.id, spec, result.final_text.as_deref()));
        let opts = CommitOptions {
            message: secrets.redact(&message),
            author_name: self.cfg.commit_author_name.clone(),
            author_email: self.cfg.commit_author_email.clone(),
        };
        // Only the push talks to the remote; the token file exists only while it may.
        if spec.push
            && let (Some(a), Some(c)) = (git.askpass, git.creds)
        {
            a.write_token(&c.token)
                .map_err(|e| failed(ErrorClass::GitError, format!("cannot write the token file: {e}")))?;
        }
        let (post, failure) = match finish(
            git.git,
            ws,
            spec.commit.then_some(&opts),
            spec.push,
            &secrets,
            cancel.token(),
        )
        .await
        {
            Ok(post) => (post, None),
            // What was done before the failing step is still the attempt's to report: a
            // commit whose push the remote declined is not "no changes".
            Err(FinishError { error, done }) => {
                let why = if !spec.push {
                    "the task asked for no push"
                } else {
                    match &error {
                        FinishFault::Git(GitError::Canceled { .. }) => "canceled",
                        FinishFault::Git(
                            GitError::Failed { step: "push", .. }
                            | GitError::Auth { step: "push", .. }
                            | GitError::NotFound { step: "push", .. }
                            | GitError::Timeout { step: "push" },
                        ) => "the push failed",
                        FinishFault::Run(_) => "the run left the repository unfit to commit",
                        FinishFault::Git(_) => "git failed before the push",
                    }
                };
                (done, Some((why, finish_failure(error))))
            }
        };
        // What the log should know of how the work was committed, whatever became of it.
        for note in &post.notes {
            events.emit(NewEvent::log("agentpool", note.clone()));
        }
        result.commit_sha = post.commit_sha;
        result.files = post.files;
        result.pushed = post.pushed;
        result.push_result = post.push_result;
        result.branch = post.branch_on_remote.then(|| ws.branch.to_string());
        let Some(sha) = result.commit_sha.clone() else {
            if let Some((_, f)) = failure {
                return Err(f);
            }
            let said = if spec.commit {
                "no changes to commit"
            } else {
                "not committed (the task asked for no commit)"
            };
            events.emit(NewEvent::log("agentpool", said));
            return Ok(());
        };
        events.emit(NewEvent::new(Lifecycle::Committed {
            sha: sha.clone(),
            files: result.files.len(),
        }));
        if let Some(place) = post.withheld {
            // The run's own output is at fault, as when it fails any other way: another attempt
            // (an agent's, in particular) may well not write the secret again.
            let why = format!(
                "not pushed: the changes contain a secret value of the task (a credential or a \
                 login token) in {place}; remove it from the changes, or pass it to the task's \
                 code at run time instead of committing it"
            );
            result.push_result = Some(why.clone());
            return Err(failed(ErrorClass::AgentError, why));
        }
        if result.pushed {
            events.emit(NewEvent::new(Lifecycle::Pushed {
                branch: ws.branch.to_string(),
                sha,
            }));
        } else {
            // A commit that was not pushed lives only in the workspace: say so where the
            // result shows the push, rather than let its id suggest it can be fetched.
            let went = if self.cfg.keep_workspaces {
                format!("the commit is only in the kept workspace {}", ws.dir.display())
            } else {
                "the commit was discarded with the workspace".to_string()
            };
            let why = failure
                .as_ref()
                .map_or("the task asked for no push", |(why, _)| why);
            let why = match &post.remote_unknown {
                // The push may have landed before it was cut short, and the remote could not
                // be asked afterwards: say that nobody knows, not that it is gone.
                Some(unknown) => format!(
                    "perhaps not pushed ({why}): whether the remote took the push is not known (it \
                     could not be asked: {unknown}); look for branch {} on the remote — if it is not \
                     there, {went}",
                    ws.branch
                ),
                None => format!("not pushed ({why}): {went}"),
            };
            events.emit(NewEvent::log("agentpool", why.clone()));
            result.push_result = Some(why);
        }
        match failure {
            Some((_, f)) => Err(f),
            None => Ok(()),
        }
    }
}
