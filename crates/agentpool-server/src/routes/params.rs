//! The path parameters of the API, each described once for every operation that takes it (in
//! `#[utoipa::path(params(…))]`). The handlers read them through `ApiPath`; these types only
//! document them.

use utoipa::IntoParams;

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
