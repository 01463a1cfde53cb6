//! `agentpool demo`: a self-contained tour of the whole pipeline, offline, in seconds.

use crate::cli::DemoArgs;
use crate::config::Settings;
use crate::exit::ExitCode;

pub async fn demo(_settings: &Settings, _args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not wired yet")
}
