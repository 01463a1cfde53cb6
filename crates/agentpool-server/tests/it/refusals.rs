//! A refused request changes nothing and says which field is wrong: a build whose task is
//! refused saves no project, a project whose defaults no task could use is not saved, and a
//! worker's registration or result is held to the rules of what it is matched and counted with.

use axum::http::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::support::{Resp, assert_error, router_app};

both_backends!(
    a_refused_build_leaves_the_project_as_it_was,
    a_project_whose_defaults_no_task_could_use_is_refused,
    a_worker_is_held_to_the_rules_of_labels_and_costs,
    an_agent_version_is_bounded_as_the_document_says,
    shape_and_query_errors_name_the_field,
    a_follow_up_in_another_project_or_repository_is_refused,
);

/// Assert `r` is a refusal with `status` whose `details.fields` name `expected`, in order.
fn assert_fields(r: &Resp, status: StatusCode, expected: &[&str]) {
    assert_error(r, status);
    let fields: Vec<&str> = r.body["error"]["details"]["fields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["field"].as_str().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(fields, expected, "{}", r.text);
}

async fn a_refused_build_leaves_the_project_as_it_was(backend: agentpool_testkit::db::Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let admin = Some(app.tokens.admin.as_str());
    let build = |slots: u32, agent: &str| {
        json!({
            "project": {"name": "pb", "repo": "https://example.com/r.git",
                "allowed_agents": ["claude-code"], "slots": slots},
            "build": {"prompt": "x", "agent": agent}
        })
    };
    // A new project: its build names an agent the project does not allow.
    let r = app.json("POST", "/v1/builds", admin, build(2, "codex")).await;
    assert_fields(&r, StatusCode::UNPROCESSABLE_ENTITY, &["build.agent"]);
    let r = app.call("GET", "/v1/projects/pb", admin, None).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "the project was saved: {}",
        r.text
    );

    // An existing project keeps its settings when the build is refused.
    let r = app
        .json("POST", "/v1/builds", admin, build(2, "claude-code"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    for refused in [
        build(7, "codex"),
        json!({"project": {"name": "pb", "repo": "https://example.com/r.git", "slots": 7},
            "build": {"prompt": "x", "profile": "nowhere"}}),
    ] {
        let r = app.json("POST", "/v1/builds", admin, refused).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let r = app.call("GET", "/v1/projects/pb", admin, None).await;
    assert_eq!(r.body["slots"], 2, "{}", r.text);
    let r = app.call("GET", "/v1/tasks?project=pb", admin, None).await;
    assert_eq!(r.body["tasks"].as_array().map(Vec::len), Some(1), "{}", r.text);
}

async fn a_project_whose_defaults_no_task_could_use_is_refused(backend: agentpool_testkit::db::Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let admin = Some(app.tokens.admin.as_str());
    let project = |allowed: &[&str], profile: &str| {
        json!({"name": "p2", "repo": "https://example.com/r.git", "default_agent": "codex",
            "allowed_agents": allowed, "default_profile": profile})
    };
    let r = app
        .json(
            "POST",
            "/v1/projects",
            admin,
            project(&["claude-code"], "nowhere"),
        )
        .await;
    assert_fields(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["default_profile", "default_agent"],
    );
    let r = app.call("GET", "/v1/projects/p2", admin, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Once the profile exists and the agent is allowed, it is saved.
    let r = app
        .json("PUT", "/v1/profiles/team", admin, json!({"model": "m"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .json(
            "PUT",
            "/v1/projects/p2",
            admin,
            project(&["claude-code", "codex"], "team"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A dependency that does not exist is named by its place in the list.
    let r = app
        .json(
            "POST",
            "/v1/tasks",
            admin,
            json!({"kind": "command", "repo": "https://example.com/r.git", "command": "true",
                "depends_on": [agentpool_core::TaskId::new()]}),
        )
        .await;
    assert_fields(&r, StatusCode::UNPROCESSABLE_ENTITY, &["depends_on[0]"]);
}

async fn a_worker_is_held_to_the_rules_of_labels_and_costs(backend: agentpool_testkit::db::Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let admin = Some(app.tokens.admin.as_str());
    let worker = Some(app.tokens.worker.as_str());
    let r = app
        .json(
            "POST",
            "/v1/workers/register",
            worker,
            json!({"hostname": "h\u{1}\n", "version": "1", "agents": [], "slots": 1,
                "labels": {"a b": "c"}}),
        )
        .await;
    assert_fields(&r, StatusCode::UNPROCESSABLE_ENTITY, &["hostname", "labels.a b"]);
    let r = app.call("GET", "/v1/workers", admin, None).await;
    assert_eq!(r.body["workers"].as_array().map(Vec::len), Some(0), "{}", r.text);

    // A negative cost is refused, and the task stays with its worker.
    let r = app
        .json(
            "POST",
            "/v1/workers/register",
            worker,
            json!({"id": "w1", "hostname": "h", "version": "1", "agents": [{"name": "command"}],
                "slots": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let task = json!({"kind": "command", "repo": "https://example.com/r.git", "command": "true"});
    let r = app.json("POST", "/v1/tasks", admin, task).await;
    let id = r.body["task"]["id"].as_str().expect("task id").to_string();
    let r = app
        .json("POST", "/v1/workers/w1/claim", worker, json!({"max": 1}))
        .await;
    let token = r.body["tasks"][0]["lease"]["token"].clone();
    assert!(token.is_number(), "claimed ({}): {}", r.status, r.text);
    let complete = |cost: f64| json!({"lease_token": token, "result": {"cost_usd": cost}});
    let r = app
        .json(
            "POST",
            &format!("/v1/workers/w1/complete/{id}"),
            worker,
            complete(-5.0),
        )
        .await;
    assert_fields(&r, StatusCode::UNPROCESSABLE_ENTITY, &["result.cost_usd"]);
    let r = app.call("GET", &format!("/v1/tasks/{id}"), admin, None).await;
    assert_eq!(r.body["state"], "running", "{}", r.text);
    let r = app
        .json(
            "POST",
            &format!("/v1/workers/w1/complete/{id}"),
            worker,
            complete(0.5),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

async fn shape_and_query_errors_name_the_field(backend: agentpool_testkit::db::Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let admin = Some(app.tokens.admin.as_str());
    let r = app.json("POST", "/v1/projects", admin, json!({})).await;
    assert_fields(&r, StatusCode::UNPROCESSABLE_ENTITY, &["name"]);
    assert_eq!(r.body["error"]["details"]["fields"][0]["message"], "is required");
    let r = app
        .json(
            "POST",
            "/v1/projects",
            admin,
            json!({"name": "p", "repo": "https://example.com/r.git", "slots": "x"}),
        )
        .await;
    let message = r.body["error"]["details"]["fields"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.ends_with("expected a whole number, 0 or more"),
        "{}",
        r.text
    );
    let r = app.call("GET", "/v1/tasks?limit=abc", admin, None).await;
    assert_fields(&r, StatusCode::BAD_REQUEST, &["limit"]);
    let r = app.call("GET", "/v1/tasks?project=bad%20name", admin, None).await;
    assert_fields(&r, StatusCode::BAD_REQUEST, &["project"]);
}

/// An agent's version is shown on the workers page: the server takes what the OpenAPI document
/// says it takes, and refuses a longer one naming the agent.
async fn an_agent_version_is_bounded_as_the_document_says(backend: agentpool_testkit::db::Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let doc = app.call("GET", "/v1/openapi.json", None, None).await;
    let max = doc.body.pointer(
        "/components/schemas/WorkerRegistration/properties/agents/items/properties/version/maxLength",
    );
    assert_eq!(
        max.and_then(serde_json::Value::as_u64),
        Some(agentpool_core::protocol::MAX_AGENT_VERSION as u64)
    );
    let max = agentpool_core::protocol::MAX_AGENT_VERSION;
    let worker = Some(app.tokens.worker.as_str());
    let register = |versions: Vec<String>| {
        let agents: Vec<_> = versions
            .into_iter()
            .enumerate()
            .map(|(i, v)| json!({"name": format!("agent-{i}"), "version": v}))
            .collect();
        json!({"hostname": "h", "version": "1", "agents": agents, "slots": 1})
    };
    let ok = register(vec!["é".repeat(max), "1.0".into()]);
    let r = app.json("POST", "/v1/workers/register", worker, ok).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let long = register(vec!["1.0".into(), "x".repeat(5000)]);
    let r = app.json("POST", "/v1/workers/register", worker, long).await;
    assert_fields(&r, StatusCode::UNPROCESSABLE_ENTITY, &["agents[1].version"]);
}

/// A follow-up goes on where the task it follows ran: one naming another repository (or a
/// project of another) would start from that repository's base without the earlier work, and
/// resume the earlier session there. It is refused on `follow_up_of`, saying where the earlier
/// task ran; naming the same place, none, or another project of the same repository, it is
/// taken there.
async fn a_follow_up_in_another_project_or_repository_is_refused(backend: agentpool_testkit::db::Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let admin = Some(app.tokens.admin.as_str());
    // pc is another project of pb's repository (two projects wired to one GitHub repository).
    for (name, repo) in [("pa", "pa"), ("pb", "pb"), ("pc", "pb")] {
        let project = json!({"name": name, "repo": format!("https://example.com/{repo}.git")});
        let r = app.json("POST", "/v1/projects", admin, project).await;
        assert!(r.status.is_success(), "{}", r.text);
    }
    let submit = |body: serde_json::Value| app.json("POST", "/v1/tasks", admin, body);
    let r = submit(json!({"kind": "command", "project": "pb", "command": "true"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let earlier = r.body["task"]["id"].as_str().unwrap_or_default().to_string();
    let r =
        submit(json!({"kind": "command", "repo": "https://example.com/none.git", "command": "true"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let projectless = r.body["task"]["id"].as_str().unwrap_or_default().to_string();

    let refusals = [
        (
            json!({"project": "pa"}),
            &earlier,
            "project pb (repository https://example.com/pb.git)",
        ),
        (
            json!({"repo": "https://example.com/pa.git"}),
            &earlier,
            "project pb",
        ),
        (
            json!({"project": "pb", "repo": "https://example.com/pa.git"}),
            &earlier,
            "project pb",
        ),
        (
            json!({"project": "pa"}),
            &projectless,
            "repository https://example.com/none.git",
        ),
    ];
    for (place, of, ran_in) in refusals {
        let mut body = json!({"kind": "command", "command": "go on", "follow_up_of": of});
        body.as_object_mut()
            .into_iter()
            .for_each(|b| b.extend(place.as_object().cloned().unwrap_or_default()));
        let r = submit(body).await;
        assert_fields(&r, StatusCode::UNPROCESSABLE_ENTITY, &["follow_up_of"]);
        let message = r.body["error"]["details"]["fields"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.starts_with(&format!("task {of} ran in {ran_in}")),
            "{message}"
        );
        assert!(
            message.contains("leave out the project and repository"),
            "{message}"
        );
        assert!(message.contains("or submit a new task"), "{message}");
    }
    let r = app.call("GET", "/v1/tasks", admin, None).await;
    assert_eq!(
        r.body["tasks"].as_array().map(Vec::len),
        Some(2),
        "nothing more was queued"
    );

    // The same place, named or not, or another project of its repository: taken there, on
    // the earlier task's work branch.
    for (place, project) in [
        (json!({}), "pb"),
        (json!({"project": "pb"}), "pb"),
        (json!({"repo": "https://example.com/pb.git"}), "pb"),
        (json!({"project": "pc"}), "pc"),
    ] {
        let mut body = json!({"kind": "command", "command": "go on", "follow_up_of": earlier});
        body.as_object_mut()
            .into_iter()
            .for_each(|b| b.extend(place.as_object().cloned().unwrap_or_default()));
        let r = submit(body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let spec = &r.body["task"]["spec"];
        assert_eq!(spec["project"], project, "{}", r.text);
        assert_eq!(spec["repo"], "https://example.com/pb.git", "{}", r.text);
        assert_eq!(spec["branch"], format!("agentpool/{earlier}"), "{}", r.text);
    }
}
