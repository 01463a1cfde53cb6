//! The projects page says what each project spent today: against its daily budget when it has
//! one (as set, however small), alone when it has none, and nothing for a project without
//! either.

use agentpool_core::project::ProjectSpec;
use agentpool_core::{TaskResult, TaskSpec};
use agentpool_testkit::db::Backend;
use axum::http::StatusCode;

use super::{claim_commands, get, register, session};
use crate::both_backends;
use crate::support::router_app;

both_backends!(the_projects_page_shows_todays_spend_against_the_budget);

async fn the_projects_page_shows_todays_spend_against_the_budget(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let store = app.store.clone();
    for (name, budget) in [
        ("web", Some(1.0)),
        ("tiny", Some(0.003)),
        ("api", None),
        ("docs", None),
    ] {
        store
            .put_project(ProjectSpec {
                name: name.into(),
                repo: format!("https://example.com/{name}.git"),
                daily_budget_usd: budget,
                ..ProjectSpec::default()
            })
            .await
            .expect("project");
    }
    let w = register(store.as_ref(), "w-1").await;
    for (project, cost) in [("web", 0.25), ("tiny", 0.0032), ("api", 0.125)] {
        store
            .enqueue(TaskSpec {
                project: Some(project.into()),
                ..TaskSpec::command("https://example.com/r.git", "true")
            })
            .await
            .expect("enqueue");
        let lease = claim_commands(store.as_ref(), &w.id, 1).await.remove(0).lease;
        let result = TaskResult {
            cost_usd: Some(cost),
            ..TaskResult::default()
        };
        store.complete(&w.id, lease, result).await.expect("complete");
    }

    let page = get(&app, "/projects", Some(&session(&app.tokens.admin))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("spent today (UTC)"), "{}", page.text);
    let row = |name: &str| {
        let start = page
            .text
            .find(&format!(r#"<th scope="row">{name}</th>"#))
            .unwrap_or_else(|| panic!("no row of {name}"));
        let end = start + page.text[start..].find("</tr>").unwrap_or(0);
        page.text[start..end].to_string()
    };
    // The budget as it was set, as `projects show` says it: not rounded to cents, so a
    // budget under half a cent does not read $0.00.
    assert!(row("web").contains("<td>$0.2500 of $1</td>"), "{}", row("web"));
    assert!(
        row("tiny").contains("<td>$0.0032 of $0.003</td>"),
        "{}",
        row("tiny")
    );
    assert!(row("api").contains("<td>$0.1250</td>"), "{}", row("api"));
    assert!(!row("docs").contains('$'), "{}", row("docs"));

    // A task of the project whose budget is spent says why it waits, the budget as it was set.
    let waiting = store
        .enqueue(TaskSpec {
            project: Some("tiny".into()),
            ..TaskSpec::command("https://example.com/r.git", "true")
        })
        .await
        .expect("enqueue")
        .task;
    let page = get(
        &app,
        &format!("/tasks/{}", waiting.id),
        Some(&session(&app.tokens.admin)),
    )
    .await;
    assert!(
        page.text.contains("spent $0.0032 of its $0.003 daily budget"),
        "{}",
        page.text
    );
}
