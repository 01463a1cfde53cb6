//! What a project spent today, over a real socket on both backends: the projects API says it
//! beside the daily budget (the sum the budget is checked against), for each attempt that
//! reported a cost, and leaves it out for a project that spent nothing.

use agentpool_core::project::ProjectSpec;
use agentpool_core::{TaskResult, TaskSpec};
use agentpool_testkit::db::Backend;

use crate::both_backends;
use crate::support::{claim_one, command_task, register, spawn_app};

both_backends!(a_projects_spend_today_is_shown_beside_its_budget);

fn project(name: &str, budget: Option<f64>) -> ProjectSpec {
    ProjectSpec {
        name: name.into(),
        repo: format!("https://example.com/{name}.git"),
        daily_budget_usd: budget,
        ..ProjectSpec::default()
    }
}

async fn a_projects_spend_today_is_shown_beside_its_budget(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    let wrk = app.worker();
    admin.put_project(&project("web", Some(1.0))).await.unwrap();
    let docs = admin.put_project(&project("docs", None)).await.unwrap();
    assert_eq!(docs.spent_today_usd, None, "nothing spent yet");

    let w = register(&wrk).await;
    for cost in [0.25, 0.5] {
        let task = TaskSpec {
            project: Some("web".into()),
            ..command_task("true")
        };
        app.submitter().submit(&task).await.unwrap();
        let c = claim_one(&wrk, &w.id).await;
        let result = TaskResult {
            cost_usd: Some(cost),
            ..TaskResult::default()
        };
        wrk.complete(&w.id, c.task.id, c.lease.token, result)
            .await
            .unwrap();
    }

    let web = admin.get_project("web").await.unwrap();
    assert_eq!(web.spent_today_usd, Some(0.75));
    assert_eq!(web.spec.daily_budget_usd, Some(1.0));
    let listed = admin.list_projects().await.unwrap();
    let spent: Vec<(&str, Option<f64>)> = listed
        .iter()
        .map(|p| (p.spec.name.as_str(), p.spent_today_usd))
        .collect();
    assert_eq!(spent, vec![("docs", None), ("web", Some(0.75))]);
    // Changing the project keeps what it spent.
    let web = admin.put_project(&project("web", Some(2.0))).await.unwrap();
    assert_eq!(web.spent_today_usd, Some(0.75));
}
