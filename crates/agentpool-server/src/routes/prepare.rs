//! What a submitted spec becomes before it is queued: the defaults of its project (and of an
//! earlier task it follows up), its profile's settings, and the checks that refuse it — every
//! problem at once, as field errors — and what a project token may reach.

use agentpool_core::{TaskId, TaskSpec, ValidationError};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::routes::tasks::reach;
use crate::state::AppState;

/// Fill project defaults into `spec` and validate it; errors name fields under `prefix`.
pub(crate) async fn prepare_spec(
    state: &AppState,
    spec: TaskSpec,
    prefix: &str,
) -> Result<TaskSpec, Vec<ValidationError>> {
    prepare_spec_in(state, spec, None, prefix).await
}

/// [`prepare_spec`], with `project` (when it is the task's) taken as the task's project
/// instead of the stored one: a build is checked against the project it is about to save.
pub(crate) async fn prepare_spec_in(
    state: &AppState,
    mut spec: TaskSpec,
    project: Option<&agentpool_core::project::ProjectSpec>,
    prefix: &str,
) -> Result<TaskSpec, Vec<ValidationError>> {
    let field = |f: &str| format!("{prefix}{f}");
    if let Some(earlier) = spec.follow_up_of {
        continue_earlier(state, &mut spec, earlier, &field).await?;
    }
    if let Some(name) = spec.project.clone() {
        let p = match project {
            Some(p) if p.name == name => p.clone(),
            _ => {
                named(state.store().get_project(&name).await, field("project"), || {
                    format!("project {name} does not exist")
                })?
                .spec
            }
        };
        if spec.repo.is_none() {
            spec.repo = Some(p.repo.clone());
        }
        if spec.kind == agentpool_core::TaskKind::Agent {
            if spec.agent.is_none() {
                spec.agent = p.default_agent.clone();
            }
            if spec.model.is_none() {
                spec.model = p.default_model.clone();
            }
            if let Some(a) = spec.agent.as_deref()
                && !p.allowed_agents.is_empty()
                && !p.allowed_agents.iter().any(|x| x == a)
            {
                return Err(vec![ValidationError::new(
                    field("agent"),
                    format!("project {name} does not allow agent {a}"),
                )]);
            }
        }
        if spec.base_ref.is_none() {
            spec.base_ref = p.default_base.clone();
        }
        if spec.checks.is_none() && !p.checks.is_empty() {
            spec.checks = Some(p.checks.clone());
        }
        if spec.kind == agentpool_core::TaskKind::Agent && spec.max_rounds.is_none() {
            spec.max_rounds = p.max_rounds;
        }
        if spec.max_cost_usd.is_none() {
            spec.max_cost_usd = p.max_cost_usd;
        }
        if spec.kind == agentpool_core::TaskKind::Agent && spec.profile.is_none() {
            spec.profile = crate::routes::profiles::project_default(state, &p, &field).await?;
        }
    }
    crate::routes::profiles::resolve(state, &mut spec, &field).await?;
    let mut errs: Vec<ValidationError> = spec
        .validate(&state.inner.limits)
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| ValidationError::new(field(&e.field), e.message))
        .collect();
    // Looked up here to name the field; the enqueue checks again in its transaction.
    for (n, dep) in spec
        .depends_on
        .iter()
        .enumerate()
        .take(agentpool_core::spec::MAX_DEPENDENCIES)
    {
        match state.store().find_task(*dep).await {
            Ok(Some(_)) => {}
            Ok(None) => errs.push(ValidationError::new(
                field(&format!("depends_on[{n}]")),
                format!("task {dep} does not exist"),
            )),
            Err(e) => {
                tracing::error!(error = %e, "dependency lookup failed");
                errs.push(ValidationError::new(
                    field("depends_on"),
                    "could not be looked up",
                ));
                break;
            }
        }
    }
    if errs.is_empty() { Ok(spec) } else { Err(errs) }
}

/// What a project token is refused before its spec is prepared, so that the refusal is all it
/// learns (preparing looks into the project, and a follow-up copies the earlier task's): a
/// project it does not reach (403), a follow-up of a task it does not reach (404, as for the
/// task itself), and a dependency on a task it does not reach (as for one that does not exist:
/// its task would otherwise wait on another project's task and learn how that ended). Fields
/// are named under `prefix`.
pub(crate) async fn reach_before_prepare(
    state: &AppState,
    by: &Caller,
    spec: &TaskSpec,
    prefix: &str,
) -> ApiResult<()> {
    if by.projects.is_none() {
        return Ok(());
    }
    if spec.project.is_some() {
        by.may_use(spec.project.as_deref())?;
    }
    for (n, dep) in spec.depends_on.iter().enumerate() {
        let task = state.store().find_task(*dep).await?;
        if task.is_none_or(|t| by.sees_task(&t).is_err()) {
            return Err(ApiError::invalid_field(
                format!("{prefix}depends_on[{n}]"),
                format!("task {dep} does not exist"),
            ));
        }
    }
    match spec.follow_up_of {
        Some(earlier) => reach(state, by, earlier).await,
        None => Ok(()),
    }
}

/// What a project token may submit, checked on the prepared spec (its project's defaults
/// filled in): a task of one of its projects, in that project's repository, with no
/// credentials beyond the project's. Otherwise it could reach another repository, or a
/// credential stored for another team, through a project it was given.
pub(crate) async fn within_reach(state: &AppState, by: &Caller, spec: &TaskSpec) -> ApiResult<()> {
    by.may_use(spec.project.as_deref())?;
    let (Some(_), Some(name)) = (&by.projects, spec.project.as_deref()) else {
        return Ok(());
    };
    let Some(p) = state.store().get_project(name).await? else {
        return Err(ApiError::not_found("project", name));
    };
    let refuse = |what: String| {
        Err(ApiError::forbidden(format!(
            "token {} is limited to projects; {what}",
            by.name
        )))
    };
    if spec.repo.as_ref().is_some_and(|r| *r != p.spec.repo) {
        return refuse(format!("its tasks run in project {name}'s repository only"));
    }
    let extra: Vec<&str> = spec
        .credentials
        .iter()
        .filter(|c| !p.spec.credentials.contains(c))
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        return refuse(format!(
            "its tasks use only the credentials project {name} names, not {}",
            extra.join(", ")
        ));
    }
    Ok(())
}

/// The record a spec's `field` names, or the field's error: not there, or not readable now.
fn named<T>(
    found: agentpool_store::Result<Option<T>>,
    field: String,
    missing: impl FnOnce() -> String,
) -> Result<T, Vec<ValidationError>> {
    match found {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(vec![ValidationError::new(field, missing())]),
        Err(e) => {
            tracing::error!(error = %e, field = %field, "lookup for a task spec failed");
            Err(vec![ValidationError::new(field, "could not be looked up")])
        }
    }
}

/// A follow-up continues the `earlier` task's work: in the same repository (it may name it, or
/// a project of it, not another) and project unless it names another of that repository, with
/// the same agent unless it says otherwise, on the same work branch
/// — so it starts from what that task pushed — from the same base, and after that task when it
/// has not finished yet.
async fn continue_earlier(
    state: &AppState,
    spec: &mut TaskSpec,
    earlier: TaskId,
    field: &impl Fn(&str) -> String,
) -> Result<(), Vec<ValidationError>> {
    let prev = named(
        state.store().find_task(earlier).await,
        field("follow_up_of"),
        || format!("task {earlier} does not exist"),
    )?;
    // In another repository, it would start from that repository's base without the earlier
    // work, and resume the earlier session there. Another project of the same repository
    // (two projects wired to one GitHub repository, each with its own checks) finds the work.
    let other_project_repo = match spec
        .project
        .as_ref()
        .filter(|p| prev.spec.project.as_ref() != Some(*p))
    {
        // One that does not exist is refused below, as such.
        Some(p) => match state.store().get_project(p).await {
            Ok(found) => found.map_or_else(|| prev.spec.repo.clone(), |f| Some(f.spec.repo)),
            Err(e) => {
                tracing::error!(error = %e, project = %p, "lookup for a task spec failed");
                return Err(vec![ValidationError::new(
                    field("project"),
                    "could not be looked up",
                )]);
            }
        },
        None => prev.spec.repo.clone(),
    };
    let elsewhere = other_project_repo != prev.spec.repo
        || spec
            .repo
            .as_ref()
            .is_some_and(|r| prev.spec.repo.as_ref() != Some(r));
    if elsewhere {
        let place = match (&prev.spec.project, &prev.spec.repo) {
            (Some(p), Some(r)) => format!("project {p} (repository {r})"),
            (Some(p), None) => format!("project {p}"),
            (None, Some(r)) => format!("repository {r}"),
            (None, None) => "another place".to_string(),
        };
        return Err(vec![ValidationError::new(
            field("follow_up_of"),
            format!(
                "task {earlier} ran in {place}, and a follow-up goes on there: leave out the \
                 project and repository (--project, --repo), or submit a new task instead of a \
                 follow-up"
            ),
        )]);
    }
    // Where it ran, whatever the project's repository is now: its branch is there.
    spec.repo = prev.spec.repo.clone();
    if spec.project.is_none() {
        spec.project = prev.spec.project.clone();
    }
    // The same agent, so that its session can be resumed: the one the earlier task named, or
    // the one that ran it (a worker's default, which another worker's may not be).
    if spec.kind == agentpool_core::TaskKind::Agent && spec.agent.is_none() {
        spec.agent = prev
            .spec
            .agent
            .clone()
            .or_else(|| prev.result.as_ref().and_then(|r| r.agent.clone()));
    }
    if spec.branch.is_none() {
        let branch = prev
            .result
            .as_ref()
            .and_then(|r| r.branch.clone())
            .or(prev.spec.branch)
            .unwrap_or_else(|| {
                agentpool_core::spec::BranchName::for_task(prev.id)
                    .as_str()
                    .to_string()
            });
        spec.branch = Some(branch);
        if spec.base_ref.is_none() {
            spec.base_ref = prev.spec.base_ref;
        }
        // Submitted before the earlier task is done ("do this, then that"): it goes on from
        // what that task pushes, so it waits for it to succeed, as a dependent does.
        if !prev.state.is_finished() && !spec.depends_on.contains(&prev.id) {
            spec.depends_on.push(prev.id);
        }
    } else if spec.base_ref.is_none() {
        // A branch of its own: it starts from what the earlier task pushed, so that the
        // session it resumes finds the work it speaks of (from the usual base, that work
        // would not be there).
        if let Some(pushed) = prev.result.as_ref().filter(|r| r.pushed) {
            spec.base_ref = pushed.branch.clone();
        }
    }
    Ok(())
}
