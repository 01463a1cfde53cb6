//! `workers …`, `projects …` and `credentials …`: inspecting and administering a server over
//! its API.

use agentpool_core::project::ProjectSpec;

use super::task_spec::{Flags, refused_by_flag};
use super::{connect, print_detail, print_done, print_json, print_list, print_table};

use crate::cli::{CredentialsCommand, ProjectsCommand, WorkersCommand};
use crate::config::Settings;
use crate::exit::Exit;
use crate::exit::ExitCode;
use crate::output::{self, Style};

/// The flags of `projects put`, by the project field each sets.
const PROJECT_FLAGS: Flags = &[
    ("name", "NAME"),
    ("repo", "--repo"),
    ("default_base", "--base"),
    ("slots", "--slots"),
    ("default_agent", "--agent"),
    ("default_model", "--model"),
    ("allowed_agents", "--allowed-agents"),
    ("credentials", "--credentials"),
    ("checks", "--check"),
    ("max_rounds", "--max-rounds"),
    ("max_cost_usd", "--max-cost-usd"),
    ("daily_budget_usd", "--daily-budget-usd"),
    ("default_profile", "--profile"),
    ("github.repository", "--github-repo"),
    ("github.api_url", "--github-api-url"),
    ("github.webhook_secret", "--github-webhook-secret"),
    ("github.token", "--github-token"),
    ("github.app.app_id", "--github-app-id"),
    ("github.app.private_key", "--github-app-key"),
    ("github.app.installation_id", "--github-app-installation"),
    ("github.label", "--github-label"),
    ("github.command", "--github-command"),
    ("github.allowed_associations", "--github-allow"),
    ("github.max_follow_ups", "--github-max-follow-ups"),
    ("forgejo.repository", "--forgejo-repo"),
    ("forgejo.url", "--forgejo-url"),
    ("forgejo.token", "--forgejo-token"),
];

pub async fn workers(settings: &Settings, cmd: WorkersCommand) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    let out = Style::stdout();
    match cmd {
        WorkersCommand::List => {
            let ws = client.list_workers().await?;
            print_list(settings, &ws, "workers", |ws| {
                out!("{}", output::workers_table(&out, ws))
            })?;
        }
        WorkersCommand::Show { id } => {
            let w = client.get_worker(&worker_id(&id)?).await?;
            print_detail(settings, &w, |out| {
                let agents: Vec<String> = w
                    .agents
                    .iter()
                    .map(|a| match &a.version {
                        Some(v) => format!("{} {v}", a.name),
                        None => a.name.clone(),
                    })
                    .collect();
                vec![
                    ("worker", out.bold(w.id.as_str())),
                    ("status", out.worker_status(w.status)),
                    ("why", w.status_message.clone().unwrap_or_default()),
                    ("host", w.hostname.clone()),
                    ("version", w.version.clone()),
                    ("running", format!("{}/{}", w.running, w.slots)),
                    ("agents", agents.join(", ")),
                    ("labels", output::labels(&w.labels)),
                    ("projects", w.projects.join(", ")),
                    (
                        "cache",
                        w.cache.map_or_else(String::new, |c| {
                            format!(
                                "{} hits, {} misses, {} mirrors, {:.1} MiB",
                                c.hits,
                                c.misses,
                                c.mirrors,
                                c.bytes as f64 / (1024.0 * 1024.0)
                            )
                        }),
                    ),
                    ("heartbeat", output::relative(w.last_heartbeat_at)),
                    ("since", output::relative(w.registered_at)),
                ]
            })?;
        }
        WorkersCommand::Drain { id } => {
            let w = client.drain_worker(&worker_id(&id)?).await?;
            if settings.json() {
                print_json(&w)?;
            } else {
                outln!("{} {}", w.id, out.worker_status(w.status));
            }
        }
    }
    Ok(ExitCode::Success)
}

pub async fn projects(settings: &Settings, cmd: ProjectsCommand) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    match cmd {
        ProjectsCommand::List => {
            let ps = client.list_projects().await?;
            let head = ["NAME", "REPO", "BASE", "SLOTS", "AGENT"];
            print_table(settings, &ps, "projects", &head, |p| {
                vec![
                    p.spec.name.clone(),
                    p.spec.repo.clone(),
                    p.spec.default_base.clone().unwrap_or_default(),
                    p.spec.slots.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                    p.spec.default_agent.clone().unwrap_or_default(),
                ]
            })?;
        }
        ProjectsCommand::Show { name } => {
            let p = client.get_project(&name).await?;
            print_detail(settings, &p, |out| {
                let s = &p.spec;
                vec![
                    ("project", out.bold(&s.name)),
                    ("repo", s.repo.clone()),
                    ("base", s.default_base.clone().unwrap_or_default()),
                    ("slots", s.slots.map(|n| n.to_string()).unwrap_or_default()),
                    ("agent", s.default_agent.clone().unwrap_or_default()),
                    ("model", s.default_model.clone().unwrap_or_default()),
                    ("profile", s.default_profile.clone().unwrap_or_default()),
                    ("allowed", s.allowed_agents.join(", ")),
                    ("credentials", s.credentials.join(", ")),
                    // One check a line, under each other like the other values.
                    (
                        "checks",
                        output::stacked(s.checks.iter().map(|c| c.name.as_deref().unwrap_or(&c.command))),
                    ),
                    ("rounds", s.max_rounds.map(|n| n.to_string()).unwrap_or_default()),
                    (
                        "github",
                        s.github.as_ref().map(github_summary).unwrap_or_default(),
                    ),
                    (
                        "forgejo",
                        s.forgejo
                            .as_ref()
                            .map(|f| {
                                format!(
                                    "{} on {} (token from credential {})",
                                    f.repository, f.url, f.token
                                )
                            })
                            .unwrap_or_default(),
                    ),
                    (
                        "max cost",
                        s.max_cost_usd.map(|c| format!("${c}")).unwrap_or_default(),
                    ),
                    ("budget", budget_line(s.daily_budget_usd, p.spent_today_usd)),
                    ("updated", output::relative(p.updated_at)),
                ]
            })?;
        }
        ProjectsCommand::Put(a) => {
            let spec = project_spec(*a)?;
            let p = client
                .put_project(&spec)
                .await
                .map_err(|e| refused_by_flag(e, "project", PROJECT_FLAGS))?;
            if settings.json() {
                print_json(&p)?;
            } else {
                outln!("project {} saved", p.spec.name);
            }
        }
        ProjectsCommand::Build(a) => {
            let a = *a;
            let name = a.project.name.clone();
            let build = agentpool_core::protocol::BuildRequest {
                prompt: a.prompt,
                ..Default::default()
            };
            let id = if a.project.repo.is_some() {
                let req = agentpool_core::protocol::CreateAndBuild {
                    project: project_spec(a.project)?,
                    build,
                };
                let out = client.create_and_build(&req).await?;
                if settings.json() && !a.wait {
                    print_json(&out)?;
                } else if !a.wait {
                    outln!("project {name} saved; build {} queued", out.build.task.id);
                }
                out.build.task.id
            } else {
                // The stored project as it is: a flag that would change it needs --repo, or it
                // would be silently dropped.
                let bare = ProjectSpec {
                    name: name.clone(),
                    ..ProjectSpec::default()
                };
                if project_spec(a.project)? != bare {
                    return Err(Exit::new(
                        ExitCode::Usage,
                        "project flags change the project, which needs --repo too (without \
                         --repo, projects build submits a build of the stored project as it is)",
                    )
                    .into());
                }
                let out = client.submit_build(&name, &build).await?;
                if settings.json() && !a.wait {
                    print_json(&out)?;
                } else if !a.wait {
                    outln!("build {} of project {name} queued", out.task.id);
                }
                out.task.id
            };
            if a.wait {
                let view = crate::commands::follow::wait_for(&client, id, settings.json(), false).await?;
                return crate::commands::tasks::finish(settings, &view);
            }
        }
        ProjectsCommand::Delete { name } => {
            client.delete_project(&name).await?;
            print_done(settings, "project", &name, "deleted")?;
        }
    }
    Ok(ExitCode::Success)
}

pub async fn credentials(settings: &Settings, cmd: CredentialsCommand) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    match cmd {
        CredentialsCommand::Put { name, from_env } => {
            let value = match from_env {
                Some(var) => std::env::var(&var).map_err(|_| {
                    Exit::new(ExitCode::Usage, format!("environment variable {var} is not set"))
                })?,
                None => read_secret_from_stdin()?,
            };
            if value.is_empty() {
                return Err(Exit::new(ExitCode::Usage, "the credential value is empty").into());
            }
            client.put_credential(&name, &value).await?;
            print_done(settings, "credential", &name, "stored")?;
        }
        CredentialsCommand::List => {
            let names = client.list_credentials().await?;
            print_table(settings, &names, "credentials", &["NAME"], |n| vec![n.clone()])?;
        }
        CredentialsCommand::Delete { name } => {
            client.delete_credential(&name).await?;
            print_done(settings, "credential", &name, "deleted")?;
        }
    }
    Ok(ExitCode::Success)
}

/// A secret piped in on stdin. From a terminal it would be echoed (and end up in scrollback),
/// so that is refused.
fn read_secret_from_stdin() -> anyhow::Result<String> {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        return Err(Exit::new(
            ExitCode::Usage,
            "pipe the value in (e.g. `printenv KEY | agentpool credentials put key`) or use --from-env VAR",
        )
        .into());
    }
    let mut value = String::new();
    std::io::stdin().read_to_string(&mut value).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::InvalidData => "the value is not UTF-8 text".to_string(),
            _ => format!("cannot read the value from stdin: {e}"),
        };
        Exit::new(ExitCode::Usage, why)
    })?;
    Ok(value.trim_end_matches(['\n', '\r']).to_string())
}

fn worker_id(id: &str) -> anyhow::Result<agentpool_core::WorkerId> {
    agentpool_core::WorkerId::parse(id).map_err(|e| Exit::new(ExitCode::Usage, e.to_string()).into())
}

/// "owner/name (GitHub App 123)" or "owner/name (token from credential gh)": the repository a
/// project answers webhooks for and how it authenticates, naming credentials, never values.
fn github_summary(g: &agentpool_core::github::GithubSettings) -> String {
    let auth = match (&g.app, &g.token) {
        (Some(app), _) => format!("GitHub App {}", app.app_id),
        (None, Some(t)) => format!("token from credential {t}"),
        (None, None) => "webhooks only, no API token".to_string(),
    };
    format!("{} ({auth})", g.repository)
}

/// The Forgejo wiring of `projects put`; clap has made sure the three values come together.
fn forgejo_settings(f: crate::cli::ForgejoArgs) -> Option<agentpool_core::forgejo::ForgejoSettings> {
    Some(agentpool_core::forgejo::ForgejoSettings {
        repository: f.forgejo_repo?,
        url: f.forgejo_url?,
        token: f.forgejo_token?,
        pull_requests: true,
        draft: f.forgejo_draft,
    })
}

/// The project `projects put` and `projects build` send.
fn project_spec(a: crate::cli::ProjectPutArgs) -> anyhow::Result<ProjectSpec> {
    let g = a.github;
    let github = match g.github_repo {
        None => None,
        Some(repository) => Some(agentpool_core::github::GithubSettings {
            repository,
            api_url: g.github_api_url,
            webhook_secret: g.github_webhook_secret.ok_or_else(|| {
                Exit::new(
                    ExitCode::Usage,
                    "--github-repo needs --github-webhook-secret CREDENTIAL",
                )
            })?,
            token: g.github_token,
            app: match (g.github_app_id, g.github_app_key) {
                (Some(app_id), Some(private_key)) => Some(agentpool_core::github::GithubApp {
                    app_id,
                    private_key,
                    installation_id: g.github_app_installation,
                }),
                (None, None) => None,
                _ => {
                    return Err(Exit::new(
                        ExitCode::Usage,
                        "--github-app-id and --github-app-key go together",
                    )
                    .into());
                }
            },
            label: g.github_label,
            command: g.github_command,
            allowed_associations: g.github_allow,
            pull_requests: !g.github_no_pull_requests,
            draft: g.github_draft,
            review_follow_ups: true,
            check_run_follow_ups: g.github_check_run_follow_ups,
            max_follow_ups: g.github_max_follow_ups,
            prompt_template: None,
            follow_up_template: None,
        }),
    };
    Ok(ProjectSpec {
        name: a.name,
        // Required by clap except for `projects build`, which calls this only with it.
        repo: a.repo.unwrap_or_default(),
        default_base: a.base,
        slots: a.slots,
        default_agent: a.agent,
        default_model: a.model,
        allowed_agents: a.allowed_agents,
        credentials: a.credentials,
        checks: a.checks.iter().map(agentpool_core::CheckSpec::command).collect(),
        max_rounds: a.max_rounds,
        max_cost_usd: a.max_cost_usd,
        daily_budget_usd: a.daily_budget_usd,
        default_profile: a.profile,
        github,
        forgejo: forgejo_settings(a.forgejo),
    })
}

/// A project's daily budget and what it spent today, as `projects show` says them (costs to a
/// hundredth of a cent, as a task's result shows its cost).
fn budget_line(budget: Option<f64>, spent: Option<f64>) -> String {
    let spent = spent.map(|c| format!("${c:.4} spent today (UTC)"));
    match (budget, spent) {
        (Some(b), spent) => format!(
            "${b}/day, {}",
            spent.unwrap_or_else(|| "nothing spent today (UTC)".into())
        ),
        (None, Some(spent)) => format!("none; {spent}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::budget_line;

    #[test]
    fn a_budget_line_says_the_budget_and_todays_spend() {
        assert_eq!(
            budget_line(Some(50.0), Some(12.345)),
            "$50/day, $12.3450 spent today (UTC)"
        );
        assert_eq!(
            budget_line(Some(5.5), None),
            "$5.5/day, nothing spent today (UTC)"
        );
        assert_eq!(budget_line(None, Some(0.01)), "none; $0.0100 spent today (UTC)");
        assert_eq!(budget_line(None, None), "");
    }
}
