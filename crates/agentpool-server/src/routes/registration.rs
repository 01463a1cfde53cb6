//! What a worker may register as: the bounds of its hostname, version, slots, agents, labels
//! and projects, all checked at once and named by field.

use agentpool_core::ValidationError;
use agentpool_core::protocol::MAX_AGENT_VERSION;
use agentpool_core::worker::WorkerRegistration;

use crate::error::{ApiError, ApiResult};

pub(crate) fn validate_registration(r: &WorkerRegistration) -> ApiResult<()> {
    let mut errs = Vec::new();
    if r.hostname.is_empty() || r.hostname.len() > 255 || r.hostname.chars().any(char::is_control) {
        errs.push(ValidationError::new(
            "hostname",
            "must be 1-255 characters, none of them control characters",
        ));
    }
    if r.version.len() > 100 {
        errs.push(ValidationError::new("version", "must be at most 100 characters"));
    }
    if !(1..=1000).contains(&r.slots) {
        errs.push(ValidationError::new("slots", "must be between 1 and 1000"));
    }
    if r.agents.len() > 100 || r.agents.iter().any(|a| a.name.is_empty() || a.name.len() > 64) {
        errs.push(ValidationError::new(
            "agents",
            "at most 100 agents with names of 1-64 characters",
        ));
    }
    // A version is shown on the workers page and in `workers list`: bounded like other text.
    for (i, a) in r.agents.iter().enumerate().take(100) {
        if a.version
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_AGENT_VERSION)
        {
            errs.push(ValidationError::new(
                format!("agents[{i}].version"),
                format!("must be at most {MAX_AGENT_VERSION} characters"),
            ));
        }
    }
    if r.labels.len() > 100 {
        errs.push(ValidationError::new("labels", "at most 100 labels"));
    } else {
        // A worker's labels are matched against tasks', so they follow the tasks' rule.
        errs.extend(
            r.labels
                .iter()
                .filter_map(|(k, v)| agentpool_core::spec::label_problem(k, v)),
        );
    }
    errs.append(&mut crate::auth::project_list_problems(&r.projects, |_| None));
    ApiError::unless_any(errs)
}
