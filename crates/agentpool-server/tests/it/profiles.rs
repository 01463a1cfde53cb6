//! Agent profiles over a real socket: CRUD, validation with field paths (secrets refused with
//! the credentials hint), an unknown profile refused at submit, and a task that names one
//! carrying the profile's settings — in its detail and in the claim a worker gets — also when
//! its project names the profile; a profile a project names as its default is not deleted,
//! and one that is gone all the same is blamed on the project.

use std::time::Duration;

use agentpool_client::Error;
use agentpool_core::project::ProjectSpec;
use agentpool_core::{AgentProfile, McpServer, TaskSpec};
use agentpool_testkit::db::Backend;

use crate::support::{register, spawn_app};

fn settings() -> AgentProfile {
    AgentProfile {
        env: [(
            "ANTHROPIC_BASE_URL".to_string(),
            "https://proxy.example.com".to_string(),
        )]
        .into(),
        model: Some("sonnet".into()),
        max_turns: Some(7),
        allowed_tools: vec!["mcp__docs__search".into()],
        append_system_prompt: Some("Be brief.".into()),
        mcp_servers: [(
            "docs".to_string(),
            McpServer {
                command: "node".into(),
                args: vec!["docs.js".into()],
                ..McpServer::default()
            },
        )]
        .into(),
    }
}

fn rejected_fields(e: Error) -> (u16, Vec<String>, String) {
    match e {
        Error::Rejected {
            status,
            fields,
            message,
            ..
        } => {
            let msgs = fields
                .iter()
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            (
                status,
                fields.into_iter().map(|f| f.field).collect(),
                format!("{message} {msgs}"),
            )
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

async fn profiles_are_stored_validated_and_resolved_into_tasks(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    let sub = app.submitter();
    let wrk = app.worker();

    let p = admin.put_profile("eu-proxy", &settings()).await.expect("put");
    assert_eq!(p.settings, settings());
    assert_eq!(sub.get_profile("eu-proxy").await.expect("get"), p);
    assert_eq!(sub.list_profiles().await.expect("list"), vec![p.clone()]);

    let mut bad = settings();
    bad.env.insert("ANTHROPIC_API_KEY".into(), "sk-ant-x".into());
    let (status, fields, msg) = rejected_fields(admin.put_profile("Bad Name", &bad).await.unwrap_err());
    assert_eq!(status, 422);
    assert_eq!(fields, ["name", "env.ANTHROPIC_API_KEY"]);
    assert!(
        msg.contains("agentpool credentials put anthropic_api_key"),
        "{msg}"
    );
    assert!(!msg.contains("sk-ant-x"), "{msg}");
    assert!(matches!(
        sub.put_profile("x", &settings()).await,
        Err(Error::Rejected { status: 403, .. })
    ));

    // Unknown profile at submit: 422 on the field.
    let mut spec = TaskSpec::agent("https://example.com/r.git", "claude-code", "hi");
    spec.profile = Some("nope".into());
    let (status, fields, _) = rejected_fields(sub.submit(&spec).await.unwrap_err());
    assert_eq!((status, fields), (422, vec!["profile".to_string()]));

    // A known one: the task carries its settings, with the task's own model winning.
    spec.profile = Some("eu-proxy".into());
    spec.model = Some("opus".into());
    let task = sub.submit(&spec).await.expect("submit").task;
    let detail = sub.get_task(task.id).await.expect("detail");
    let ran_with = detail
        .task
        .spec
        .profile_settings
        .clone()
        .expect("resolved settings");
    assert_eq!(ran_with, settings());
    assert_eq!(detail.task.spec.model.as_deref(), Some("opus"));
    assert_eq!(
        detail.task.spec.max_turns,
        Some(7),
        "the profile's turn limit is the default"
    );

    // A project's default profile applies to its tasks that name none; a task's own wins.
    let mut project = ProjectSpec {
        name: "proj".into(),
        repo: "https://example.com/r.git".into(),
        default_agent: Some("claude-code".into()),
        default_profile: Some("Not A Name".into()),
        ..ProjectSpec::default()
    };
    let (status, fields, _) = rejected_fields(admin.put_project(&project).await.unwrap_err());
    assert_eq!((status, fields), (422, vec!["default_profile".to_string()]));
    project.default_profile = Some("eu-proxy".into());
    admin.put_project(&project).await.expect("put project");
    admin
        .put_profile("other", &AgentProfile::default())
        .await
        .expect("put other");
    let mut in_project = TaskSpec::agent("https://example.com/r.git", "claude-code", "hi");
    in_project.repo = None;
    in_project.project = Some("proj".into());
    let by_default = sub.submit(&in_project).await.expect("submit").task;
    let detail = sub.get_task(by_default.id).await.expect("detail").task.spec;
    assert_eq!(detail.profile.as_deref(), Some("eu-proxy"));
    assert_eq!(detail.profile_settings, Some(settings()));
    in_project.profile = Some("other".into());
    let own = sub.submit(&in_project).await.expect("submit").task;
    let detail = sub.get_task(own.id).await.expect("detail").task.spec;
    assert_eq!(detail.profile.as_deref(), Some("other"));
    assert_eq!(detail.profile_settings, Some(AgentProfile::default()));

    // Not deleted while a project names it as its default: every agent task of the project
    // would be refused. Once the project names another, it goes.
    let e = admin.delete_profile("eu-proxy").await.unwrap_err();
    match &e {
        Error::Rejected {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((*status, code.as_str()), (409, "profile_in_use"), "{e:?}");
            assert!(message.contains("default profile of project proj;"), "{message}");
        }
        other => panic!("expected a 409, got {other:?}"),
    }
    assert_eq!(
        sub.get_profile("eu-proxy").await.expect("kept").settings,
        settings()
    );
    project.default_profile = Some("other".into());
    admin.put_project(&project).await.expect("put project");

    // Changing or deleting the profile does not change a submitted task.
    admin.delete_profile("eu-proxy").await.expect("delete");
    assert!(matches!(
        admin.delete_profile("eu-proxy").await,
        Err(Error::NotFound(_))
    ));
    let w = register(&wrk).await;
    let claimed = wrk.claim(&w.id, 3, Duration::ZERO).await.expect("claim");
    let work = claimed
        .iter()
        .find(|c| c.claimed.task.id == task.id)
        .expect("claimed");
    assert_eq!(work.claimed.task.spec.profile_settings, Some(settings()));
}

crate::both_backends!(
    profiles_are_stored_validated_and_resolved_into_tasks,
    a_missing_default_profile_is_blamed_on_the_project,
);

/// A project whose default profile is gone (deleted before projects held on to it, or while
/// the project was being stored): its tasks are refused on `project`, saying how to mend it,
/// not on a `profile` the submitter never named.
async fn a_missing_default_profile_is_blamed_on_the_project(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    let sub = app.submitter();
    admin.put_profile("p1", &settings()).await.expect("put");
    let project = ProjectSpec {
        name: "proj".into(),
        repo: "https://example.com/r.git".into(),
        default_agent: Some("claude-code".into()),
        default_profile: Some("p1".into()),
        ..ProjectSpec::default()
    };
    admin.put_project(&project).await.expect("put project");
    app.store
        .delete_profile("p1")
        .await
        .expect("delete under the API");

    let mut spec = TaskSpec::agent("https://example.com/r.git", "claude-code", "hi");
    spec.repo = None;
    spec.project = Some("proj".into());
    let (status, fields, msg) = rejected_fields(sub.submit(&spec).await.unwrap_err());
    assert_eq!((status, fields), (422, vec!["project".to_string()]));
    assert!(
        msg.contains("project proj's default profile p1 does not exist"),
        "{msg}"
    );
    assert!(msg.contains("agentpool profiles put p1"), "{msg}");
    assert!(msg.contains("agentpool projects put proj"), "{msg}");
    // In a batch, under the task's index.
    let (_, fields, _) = rejected_fields(sub.submit_batch(vec![spec.clone()]).await.unwrap_err());
    assert_eq!(fields, ["tasks[0].project"]);

    // A task naming a profile of its own is not held up by the project's.
    admin
        .put_profile("p2", &AgentProfile::default())
        .await
        .expect("put");
    spec.profile = Some("p2".into());
    sub.submit(&spec).await.expect("own profile");
    // Nor are command tasks, which run no profile.
    let command = TaskSpec {
        project: Some("proj".into()),
        repo: None,
        ..TaskSpec::command("https://example.com/r.git", "make")
    };
    sub.submit(&command).await.expect("command task");

    // Mended by storing the profile again.
    admin.put_profile("p1", &settings()).await.expect("put again");
    spec.profile = None;
    let t = sub.submit(&spec).await.expect("submit").task;
    assert_eq!(t.spec.profile.as_deref(), Some("p1"));
}
