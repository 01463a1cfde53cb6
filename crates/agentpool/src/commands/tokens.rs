//! `agentpool tokens`: create (optionally limited to projects and with an expiry), list and
//! revoke API tokens, over the API or directly on the database.

use agentpool_core::Timestamp;
use agentpool_core::protocol::{TokenCreate, TokenInfo, TokenRotate};
use agentpool_server::Role;
use agentpool_server::auth::TokenLimits;
use anyhow::Context;

use super::print_json;
use super::task_spec::{Flags, refused_by_flag};
use crate::cli::{TokenCreateArgs, TokensArgs, TokensCommand};
use crate::config::{Settings, redact_url};
use crate::exit::{Exit, ExitCode};
use crate::output::{self, Style};

/// The flags of `tokens create`, by the field each sets.
const TOKEN_FLAGS: Flags = &[
    ("name", "NAME"),
    ("role", "--role"),
    ("projects", "--project"),
    ("expires_at", "--expires-in"),
];

enum Backend {
    Server(agentpool_client::Client),
    Database(std::sync::Arc<dyn agentpool_store::Store>),
}

/// `agentpool tokens …`: over the API of the configured server (`--server`, with an admin
/// `--token`) when there is one, else directly on the database (`--database-url` or the data
/// dir's), which is how the first admin token comes to exist.
pub async fn tokens(settings: &Settings, args: TokensArgs) -> anyhow::Result<ExitCode> {
    let cmd = args.command;
    if let Some(url) = &settings.server {
        let client = settings.client(url)?;
        return tokens_on(settings, cmd, Backend::Server(client)).await;
    }
    let url = settings.database_url(args.database_url.as_deref());
    crate::config::check_database_url(&url)?;
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&settings.data_dir).ok();
    }
    let store = agentpool_store::open_store(&url)
        .await
        .with_context(|| format!("cannot open {}", redact_url(&url)))?;
    let done = tokens_on(settings, cmd, Backend::Database(store.clone())).await;
    store.close().await;
    done
}

async fn tokens_on(settings: &Settings, cmd: TokensCommand, on: Backend) -> anyhow::Result<ExitCode> {
    match cmd {
        TokensCommand::Create(a) => create(settings, a, &on).await?,
        TokensCommand::List => list(settings, &all(&on).await?)?,
        TokensCommand::Rotate { id, grace } => {
            let id = resolve(&on, &id).await?;
            rotate(settings, &id, grace, &on).await?
        }
        TokensCommand::Revoke { id } => {
            let id = resolve(&on, &id).await?;
            match &on {
                Backend::Server(c) => c.revoke_token(&id).await?,
                Backend::Database(store) => store.revoke_token(&id).await?,
            }
            if settings.json() {
                print_json(&serde_json::json!({ "revoked": id }))?;
            } else {
                outln!("token {id} revoked");
            }
        }
    }
    Ok(ExitCode::Success)
}

async fn create(settings: &Settings, a: TokenCreateArgs, on: &Backend) -> anyhow::Result<()> {
    let role: Role = a
        .role
        .as_str()
        .parse()
        .map_err(|e: agentpool_server::auth::UnknownRole| Exit::new(ExitCode::Usage, e.to_string()))?;
    let expires_at = a
        .expires_in
        .map(|secs| {
            let secs = i64::try_from(secs).unwrap_or(i64::MAX);
            chrono::TimeDelta::try_seconds(secs)
                .and_then(|d| chrono::Utc::now().checked_add_signed(d))
                .ok_or_else(|| Exit::new(ExitCode::Usage, "--expires-in: too far in the future"))
        })
        .transpose()?;
    let limits = TokenLimits {
        projects: a.projects.clone(),
        expires_at,
    };
    let (id, plaintext, expires_at) = match on {
        Backend::Server(c) => {
            let req = TokenCreate {
                name: a.name.clone(),
                role: role.as_str().to_string(),
                projects: limits.projects,
                expires_at: limits.expires_at,
            };
            // Refused fields are named by flag; anything else (a name in use) as the server says.
            let t = c.create_token(&req).await.map_err(|e| match &e {
                agentpool_client::Error::Rejected { fields, .. } if !fields.is_empty() => {
                    refused_by_flag(e, "token", TOKEN_FLAGS)
                }
                _ => anyhow::Error::from(e),
            })?;
            (t.id, t.token, t.expires_at)
        }
        Backend::Database(store) => {
            let errs = limits.problems(store.as_ref(), role).await?;
            if !errs.is_empty() {
                let said: Vec<String> = errs
                    .iter()
                    .map(|e| format!("{}: {}", flag_of(&e.field), e.message))
                    .collect();
                return Err(Exit::new(ExitCode::Usage, format!("token refused: {}", said.join("; "))).into());
            }
            let t = agentpool_server::create_unique_token(store.as_ref(), role, &a.name, limits).await?;
            (t.id, t.plaintext, t.record.expires_at)
        }
    };
    if settings.json() {
        print_json(&serde_json::json!({
            "id": id, "name": a.name, "role": role.as_str(), "projects": a.projects,
            "expires_at": expires_at, "token": plaintext,
        }))?;
    } else {
        // The value alone on stdout so that `$(agentpool tokens create …)` works.
        outln!("{plaintext}");
        let mut what = role.as_str().to_string();
        if !a.projects.is_empty() {
            let of = if a.projects.len() == 1 {
                "project"
            } else {
                "projects"
            };
            what.push_str(&format!(" of {of} {}", a.projects.join(", ")));
        }
        if let Some(at) = expires_at {
            what.push_str(&format!(", expires {}", day(at)));
        }
        eprintln!(
            "{}",
            Style::stderr().dim(&format!(
                "token {id} ({}, {what}) created; this is the only time its value is shown",
                a.name
            ))
        );
    }
    Ok(())
}

/// Every token, as `tokens list` shows them.
async fn all(on: &Backend) -> anyhow::Result<Vec<TokenInfo>> {
    Ok(match on {
        Backend::Server(c) => c.list_tokens().await?,
        Backend::Database(store) => store
            .list_tokens()
            .await?
            .into_iter()
            .map(TokenInfo::from)
            .collect(),
    })
}

/// The id `given` stands for: itself when it is shaped like an id, else the id of the one live
/// (neither revoked nor expired) token of that name. A name two live tokens share (as they do
/// while a rotation's grace runs) is refused, naming their ids.
async fn resolve(on: &Backend, given: &str) -> anyhow::Result<String> {
    if uuid::Uuid::try_parse(given).is_ok() {
        return Ok(given.to_string());
    }
    let now = chrono::Utc::now();
    let live: Vec<TokenInfo> = all(on)
        .await?
        .into_iter()
        .filter(|t| t.name == given && !t.revoked && !t.expired(now))
        .collect();
    match live.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(Exit::new(
            ExitCode::Failed,
            format!("no live token is named or has the id {given:?}: `agentpool tokens list` shows them"),
        )
        .into()),
        several => {
            let ids: Vec<&str> = several.iter().map(|t| t.id.as_str()).collect();
            Err(Exit::new(
                ExitCode::Usage,
                format!(
                    "{} live tokens are named {given} ({}): give the id of the one meant",
                    several.len(),
                    ids.join(", ")
                ),
            )
            .into())
        }
    }
}

fn list(settings: &Settings, ts: &[TokenInfo]) -> anyhow::Result<()> {
    if settings.json() {
        return print_json(&ts);
    }
    if ts.is_empty() {
        eprintln!("no tokens");
        return Ok(());
    }
    let out = Style::stdout();
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = ts
        .iter()
        .map(|t| {
            let state = if t.revoked {
                out.red("revoked")
            } else if t.expired(now) {
                out.red("expired")
            } else {
                String::new()
            };
            vec![
                t.id.clone(),
                t.name.clone(),
                t.role.clone(),
                if t.projects.is_empty() {
                    "all".to_string()
                } else {
                    t.projects.join(",")
                },
                t.expires_at.map_or_else(|| "never".to_string(), day),
                t.last_used_at
                    .map_or_else(|| "never".to_string(), output::relative),
                output::relative(t.created_at),
                state,
            ]
        })
        .collect();
    let head = [
        "ID",
        "NAME",
        "ROLE",
        "PROJECTS",
        "EXPIRES",
        "LAST USED",
        "CREATED",
        "STATE",
    ];
    out!("{}", output::table(&out, &head, &rows));
    Ok(())
}

async fn rotate(settings: &Settings, id: &str, grace: u64, on: &Backend) -> anyhow::Result<()> {
    if grace > TokenRotate::MAX_GRACE_SECS {
        return Err(Exit::new(ExitCode::Usage, "--grace: at most 30d").into());
    }
    let req = TokenRotate {
        grace_secs: Some(grace),
    };
    let out = match on {
        Backend::Server(c) => c.rotate_token(id, &req).await?,
        Backend::Database(store) => {
            let grace = std::time::Duration::from_secs(grace);
            agentpool_server::auth::rotate_token(store.as_ref(), id, grace).await?
        }
    };
    if settings.json() {
        return print_json(&out);
    }
    let s = &out.successor;
    outln!("{}", s.token);
    let expires = s
        .expires_at
        .map_or_else(String::new, |at| format!(" (expires {})", day(at)));
    eprintln!(
        "{}",
        Style::stderr().dim(&format!(
            "token {} ({}) rotated. Its successor is {}{expires}; its value, printed above, \
             is shown only this once. The old token stops working at {}.",
            id,
            s.name,
            s.id,
            day(out.previous_expires_at)
        ))
    );
    Ok(())
}

/// The flag that sets a field of the token, for refusals found on the database directly.
fn flag_of(field: &str) -> &'static str {
    let top = field.split(['.', '[']).next().unwrap_or(field);
    TOKEN_FLAGS
        .iter()
        .find(|(f, _)| *f == top)
        .map_or("NAME", |(_, flag)| *flag)
}

fn day(t: Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}
