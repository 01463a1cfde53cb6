//! `agentpool profiles`: put, list, show and delete the agent profiles tasks name.

use agentpool_core::{AgentProfile, McpServer, Profile};

use super::{connect, print_detail, print_done, print_json, print_table};
use crate::cli::{ProfilePutArgs, ProfilesCommand};
use crate::config::Settings;
use crate::exit::{Exit, ExitCode};
use crate::output::{Style, stacked};

pub async fn profiles(settings: &Settings, cmd: ProfilesCommand) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    match cmd {
        ProfilesCommand::Put(args) => {
            let name = args.name.clone();
            let p = client.put_profile(&name, &settings_from(args)?).await?;
            if settings.json() {
                print_json(&p)?;
            } else {
                outln!("profile {name} stored");
            }
        }
        ProfilesCommand::List => {
            let list = client.list_profiles().await?;
            // Variables by name only: a profile holds no secrets, but its values are long.
            let head = ["NAME", "MODEL", "ENV", "MCP SERVERS"];
            print_table(settings, &list, "profiles", &head, |p| {
                let s = &p.settings;
                vec![
                    p.name.clone(),
                    s.model.clone().unwrap_or_default(),
                    s.env.keys().cloned().collect::<Vec<_>>().join(","),
                    s.mcp_servers.keys().cloned().collect::<Vec<_>>().join(","),
                ]
            })?;
        }
        ProfilesCommand::Show { name } => {
            let p = client.get_profile(&name).await?;
            print_detail(settings, &p, |out| detail(out, &p))?;
        }
        ProfilesCommand::Delete { name } => {
            client.delete_profile(&name).await?;
            print_done(settings, "profile", &name, "deleted")?;
        }
    }
    Ok(ExitCode::Success)
}

/// `profiles show`: each setting, one line an item where there are several (a variable, an
/// MCP server with its command line, a tool), under each other like the other values.
fn detail(out: &Style, p: &Profile) -> Vec<(&'static str, String)> {
    let s = &p.settings;
    let servers: Vec<String> = s
        .mcp_servers
        .iter()
        .map(|(name, m)| {
            let mut line = format!("{name}: {}", m.command);
            for a in &m.args {
                line.push(' ');
                line.push_str(a);
            }
            if !m.env.is_empty() {
                let names: Vec<&str> = m.env.keys().map(String::as_str).collect();
                line.push_str(&format!(" (env {})", names.join(",")));
            }
            line
        })
        .collect();
    vec![
        ("profile", out.bold(&p.name)),
        ("model", s.model.clone().unwrap_or_default()),
        (
            "max turns",
            s.max_turns.map(|n| n.to_string()).unwrap_or_default(),
        ),
        ("env", stacked(s.env.iter().map(|(k, v)| format!("{k}={v}")))),
        ("mcp", stacked(servers)),
        ("tools", stacked(&s.allowed_tools)),
        (
            "prompt",
            stacked(s.append_system_prompt.iter().flat_map(|p| p.lines())),
        ),
    ]
}

/// The settings to store: the file's (if any), then each flag on top.
fn settings_from(args: ProfilePutArgs) -> anyhow::Result<AgentProfile> {
    let usage = |m: String| anyhow::Error::from(Exit::new(ExitCode::Usage, m));
    let mut s: AgentProfile = match &args.from_file {
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                    .map_err(|e| usage(format!("--from-file -: {e}")))?;
                t
            } else {
                std::fs::read_to_string(path)
                    .map_err(|e| usage(format!("--from-file {}: {e}", path.display())))?
            };
            serde_json::from_str(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?
        }
        None => AgentProfile::default(),
    };
    s.env.extend(args.env);
    s.model = args.model.or(s.model);
    s.max_turns = args.max_turns.or(s.max_turns);
    s.allowed_tools.extend(args.allowed_tools);
    s.append_system_prompt = args.append_system_prompt.or(s.append_system_prompt);
    for m in args.mcp_servers {
        let (name, cmdline) = m
            .split_once('=')
            .ok_or_else(|| usage(format!("--mcp-server {m:?}: expected NAME=COMMAND [ARG…]")))?;
        let mut words = cmdline.split_whitespace().map(str::to_string);
        let command = words
            .next()
            .ok_or_else(|| usage(format!("--mcp-server {m:?}: the command is empty")))?;
        s.mcp_servers.insert(
            name.to_string(),
            McpServer {
                command,
                args: words.collect(),
                ..McpServer::default()
            },
        );
    }
    Ok(s)
}
