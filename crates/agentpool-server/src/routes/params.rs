//! The path parameters of the API, each described once for every operation that takes it (in
//! `#[utoipa::path(params(…))]`), and the rule a stored `{name}` must follow. The handlers read
//! them through `ApiPath`; these types only document them.

use agentpool_core::ValidationError;
use utoipa::IntoParams;

/// What a profile, schedule or notification name may be (`agentpool_core::profile::valid_name`).
const NAME_RULE: &str = "use 1-64 characters from [a-z0-9._-], starting with a letter or digit";

/// Every problem of a profile, schedule or notification stored under `name` with a spec whose
/// own validation gave `spec`: the name's first, so one answer names them all.
pub(crate) fn name_and_spec_problems(
    name: &str,
    spec: Result<(), Vec<ValidationError>>,
) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    if !agentpool_core::profile::valid_name(name) {
        errs.push(ValidationError::new("name", NAME_RULE));
    }
    errs.extend(spec.err().unwrap_or_default());
    errs
}

/// `{id}` of a task.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the path; handlers extract it with ApiPath")]
pub struct TaskPath {
    /// Task id
    id: String,
}

/// `{id}` of a worker.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the path; handlers extract it with ApiPath")]
pub struct WorkerPath {
    /// Worker id
    id: String,
}

/// `{id}` of a worker and `{task}`, one of its tasks.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the path; handlers extract it with ApiPath")]
pub struct WorkerTaskPath {
    /// Worker id
    id: String,
    /// Task id
    task: String,
}

/// `{name}` of a project.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the path; handlers extract it with ApiPath")]
pub struct ProjectPath {
    /// Project name
    name: String,
}

/// `{name}` of a profile.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the path; handlers extract it with ApiPath")]
pub struct ProfilePath {
    /// Profile name
    name: String,
}

/// `{name}` of a credential.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the path; handlers extract it with ApiPath")]
pub struct CredentialPath {
    /// Credential name
    name: String,
}

/// `{id}` of a token.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the path; handlers extract it with ApiPath")]
pub struct TokenPath {
    /// Token id (not its value)
    id: String,
}

/// `{name}` of a schedule.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the path; handlers extract it with ApiPath")]
pub struct SchedulePath {
    /// Schedule name
    name: String,
}

/// `{name}` of a notification.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the path; handlers extract it with ApiPath")]
pub struct NotificationPath {
    /// Notification name
    name: String,
}
