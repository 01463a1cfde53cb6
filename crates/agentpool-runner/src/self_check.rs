//! Whether this machine (or pod) can run a task at all: git and `sh` start, a task's private
//! directory can be made, and the agents asked about are installed. Runs nothing of a task, so
//! it fails none. A worker uses it to confirm, before it hands back a task it could not start,
//! that the fault is its own; an unhealthy worker, to learn when to claim again; and `run-task
//! --check` (a launcher's check Job), to say whether a pod made from its template can run one.

use std::path::Path;
use std::time::Duration;

use crate::pipeline::Pipeline;
use crate::private::PrivateDir;

/// How long one program of the check may take to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether what a task needs of this worker starts: git, `sh`, a private task directory, and
/// `agent` (or, with `None`, every agent it offers); why not, when something does not.
pub async fn self_check(pipeline: &Pipeline, agent: Option<&str>) -> Result<(), String> {
    let cfg = pipeline.config();
    starts(&cfg.git_program, &["--version"]).await?;
    starts(Path::new("sh"), &["-c", "true"]).await?;
    for parent in [cfg.workspace.root.clone(), cfg.state_dir.join("credentials")] {
        // Removed again when dropped.
        PrivateDir::create(&parent)
            .map_err(|e| format!("cannot create a private directory in {}: {e}", parent.display()))?;
    }
    let agents = pipeline.agents();
    let names = match agent {
        Some(one) => vec![one.to_string()],
        None => agents.names(),
    };
    for name in names {
        // A command task names no agent of the registry: nothing more to check.
        if agents.get(&name).is_some_and(|a| !a.installed()) {
            return Err(format!("agent {name} is not installed"));
        }
    }
    Ok(())
}

async fn starts(program: &Path, args: &[&str]) -> Result<(), String> {
    let run = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    let shown = program.display();
    match tokio::time::timeout(CHECK_TIMEOUT, run).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("{shown} {} ended with {s}", args.join(" "))),
        Ok(Err(e)) => Err(format!("{shown} cannot be started: {e}")),
        Err(_) => Err(format!("{shown} did not answer within {CHECK_TIMEOUT:?}")),
    }
}
