//! `agentpool notifications`: put, list, show, ping and delete the URLs told of task ends, and
//! list what was delivered to each.

use agentpool_core::notification::{Delivery, DeliveryState, Format, NotificationSpec};
use agentpool_core::render::count;

use super::task_spec::{Flags, refused_by_flag};
use super::{connect, print_detail, print_done, print_json, print_table};
use crate::cli::NotificationsCommand;
use crate::config::Settings;
use crate::exit::{Exit, ExitCode};
use crate::output;

/// The flags of `notifications put`, by the field each sets.
const NOTIFICATION_FLAGS: Flags = &[
    ("name", "NAME"),
    ("url", "--url"),
    ("on", "--on"),
    ("project", "--project"),
    ("labels", "--label"),
    ("secret_credential", "--secret-credential"),
    ("format", "--format"),
];

pub async fn notifications(settings: &Settings, cmd: NotificationsCommand) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    match cmd {
        NotificationsCommand::Put(args) => {
            let spec = NotificationSpec {
                url: args.url,
                on: args.on,
                project: args.project,
                labels: args.labels.into_iter().collect(),
                secret_credential: args.secret_credential,
                format: args.format,
            };
            let n = client
                .put_notification(&args.name, &spec)
                .await
                .map_err(|e| refused_by_flag(e, "notification", NOTIFICATION_FLAGS))?;
            if settings.json() {
                print_json(&n)?;
            } else {
                outln!("notification {} stored; told of {}", n.name, n.spec.describe());
            }
        }
        NotificationsCommand::List => {
            let list = client.list_notifications().await?;
            // The URL is left out: its path or query may be the endpoint's secret.
            print_table(settings, &list, "notifications", &["NAME", "TOLD OF"], |n| {
                vec![n.name.clone(), n.spec.describe()]
            })?;
        }
        NotificationsCommand::Show { name } => {
            let n = client.get_notification(&name).await?;
            print_detail(settings, &n, |out| {
                let format = match n.spec.format {
                    Format::Json => "json (the event, and the task as `GET /v1/tasks/{id}` shows it)",
                    Format::Slack => "slack (one line of text)",
                };
                let signed = match &n.spec.secret_credential {
                    Some(c) => format!("with credential {c} (X-Agentpool-Signature-256)"),
                    None => "no (no --secret-credential)".to_string(),
                };
                vec![
                    ("name", out.bold(&n.name)),
                    // Shown here, unlike in the list: a detail view is asked for by name, by
                    // an admin, who may need to check where deliveries go.
                    ("url", n.spec.url.clone()),
                    ("told of", n.spec.describe()),
                    ("format", format.to_string()),
                    ("signed", signed),
                    ("updated", output::relative(n.updated_at)),
                ]
            })?;
        }
        NotificationsCommand::Deliveries { name, limit } => {
            let list = client.list_deliveries(&name, limit).await?;
            let head = ["ID", "CREATED", "EVENT", "TASK", "STATE"];
            print_table(settings, &list, "deliveries", &head, delivery_row)?;
        }
        NotificationsCommand::Test { name } => {
            let r = client.ping_notification(&name).await?;
            if settings.json() {
                print_json(&r)?;
            }
            if !r.delivered {
                let why = r.error.as_deref().unwrap_or("no answer");
                return Err(Exit::new(
                    ExitCode::Failed,
                    format!("notification {name}: ping not delivered: {why}"),
                )
                .into());
            }
            if !settings.json() {
                let status = r.status.map(|s| format!("HTTP {s}")).unwrap_or_default();
                outln!(
                    "notification {name}: ping delivered ({status} in {} ms)",
                    r.took_ms
                );
            }
        }
        NotificationsCommand::Delete { name } => {
            client.delete_notification(&name).await?;
            print_done(settings, "notification", &name, "deleted")?;
        }
    }
    Ok(ExitCode::Success)
}

/// One delivery, a line: id, when, event, task, where it stands.
fn delivery_row(d: &Delivery) -> Vec<String> {
    let attempts = count(d.attempts, "attempt", "attempts");
    let standing = match d.state {
        DeliveryState::Delivered => format!("delivered ({attempts})"),
        DeliveryState::Failed => format!(
            "failed after {attempts}: {}",
            d.last_error.as_deref().unwrap_or("no answer")
        ),
        DeliveryState::Pending => match (&d.last_error, d.next_attempt_at) {
            (Some(why), Some(at)) => {
                format!("retry at {} after {attempts} ({why})", at.format("%H:%M:%S UTC"))
            }
            _ => "pending".to_string(),
        },
    };
    vec![
        d.id.to_string(),
        d.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        d.event.to_string(),
        d.task_id.to_string(),
        standing,
    ]
}

#[cfg(test)]
mod tests {
    use agentpool_core::TaskId;
    use chrono::TimeZone;

    use super::*;

    /// Where a delivery stands says how many attempts it took, retried ones included.
    #[test]
    fn a_delivery_row_counts_its_attempts() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let d = Delivery {
            id: 7,
            notification: "ops".into(),
            task_id: TaskId::new(),
            event: "task.failed".into(),
            state: DeliveryState::Pending,
            attempts: 2,
            next_attempt_at: Some(at),
            last_status: Some(503),
            last_error: Some("HTTP 503 Service Unavailable".into()),
            finished_at: at,
            created_at: at,
            updated_at: at,
        };
        assert_eq!(
            delivery_row(&d)[4],
            "retry at 03:04:05 UTC after 2 attempts (HTTP 503 Service Unavailable)"
        );
        let failed = Delivery {
            state: DeliveryState::Failed,
            attempts: 8,
            next_attempt_at: None,
            ..d
        };
        assert_eq!(
            delivery_row(&failed)[4],
            "failed after 8 attempts: HTTP 503 Service Unavailable"
        );
    }
}
