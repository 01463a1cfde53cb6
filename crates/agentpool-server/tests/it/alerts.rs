//! The shipped alerting rules for the server (`deploy/prometheus/alerts.yaml`, group
//! `agentpool`) select series the server really exports: a scrape after one task succeeded and
//! another failed `AUTH_FAILED` has every metric, label and label value they name.

use agentpool_core::ErrorClass;
use agentpool_testkit::alerts;
use agentpool_testkit::db::Backend;

use crate::support::{claim_one, command_task, complete, fail, scrape, spawn_app, submit_and_claim};

#[tokio::test]
async fn the_server_s_alerting_rules_select_series_it_exports() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let (sub, wrk, w, _, claimed) = submit_and_claim(&app, "true").await;
    complete(&wrk, &w.id, &claimed).await;
    sub.submit(&command_task("false")).await.expect("submit");
    let claimed = claim_one(&wrk, &w.id).await;
    fail(&wrk, &w.id, &claimed, ErrorClass::AuthFailed, "invalid api key")
        .await
        .expect("fail");
    // A token that expires: its series exists while it is valid.
    let expiring = agentpool_core::protocol::TokenCreate {
        expires_at: Some(chrono::Utc::now() + chrono::Duration::days(3)),
        ..agentpool_core::protocol::TokenCreate::new("ci-3d", "worker")
    };
    let created = app.admin().create_token(&expiring).await.expect("token");
    let text = scrape(&app.base).await;
    let secs = expires_in(&text, "ci-3d");
    assert!((3 * 86400 - 120..=3 * 86400).contains(&secs), "{text}");
    alerts::assert_group_fits("agentpool", &text);

    // Rotated with a day's grace: the token and its successor share the name, and the one
    // series says when the later of them expires (the successor, three days from now); with
    // the successor revoked, the old token's grace.
    let grace = agentpool_core::protocol::TokenRotate {
        grace_secs: Some(86400),
    };
    let rotated = app
        .admin()
        .rotate_token(&created.id, &grace)
        .await
        .expect("rotate");
    let text = scrape(&app.base).await;
    let secs = expires_in(&text, "ci-3d");
    assert!((3 * 86400 - 120..=3 * 86400).contains(&secs), "{text}");
    app.admin()
        .revoke_token(&rotated.successor.id)
        .await
        .expect("revoke");
    let text = scrape(&app.base).await;
    let secs = expires_in(&text, "ci-3d");
    assert!(
        (86400 - 120..=86400).contains(&secs),
        "the old token's grace: {text}"
    );
}

/// The seconds `agentpool_token_expires_in_seconds` gives the worker token `name`: its one series.
fn expires_in(text: &str, name: &str) -> i64 {
    let series: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("agentpool_token_expires_in_seconds{") && l.contains(&format!(r#"name="{name}""#))
        })
        .collect();
    assert_eq!(series.len(), 1, "{text}");
    assert!(series[0].contains(r#"role="worker""#), "{}", series[0]);
    series[0]
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a value")
}
