//! agentpool's worker runtime: the git workspace pipeline (clone or warm mirror, work branch,
//! commit, push), process control for commands and agents, and the worker loop that registers,
//! heartbeats, claims and reports through a [`WorkerApi`] — the server's HTTP API through
//! `agentpool_client::Client`.
//!
//! Entry point for the binary: build a [`WorkerConfig`], a client, and call
//! [`run_worker`] with a shutdown token that SIGTERM/SIGINT cancel.

// The product's code returns and reports its failures; only its tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod attempt;
pub mod budget;
pub mod cache_stats;
pub mod capabilities;
pub mod checks;
pub mod events;
pub mod git;
pub mod health;
pub mod log_limit;
pub mod minted;
mod mirror;
pub mod mirror_cache;
mod own_key;
pub mod pipeline;
pub mod private;
pub mod self_check;
mod unreported;
pub mod worker;
pub mod workspace;

/// Process control lives in the agents crate, shared with the agent adapters.
pub use agentpool_agents::process;

pub use api::{ApiError, ClaimedWork, WorkerApi};
pub use attempt::{AttemptConfig, AttemptOutcome, run_attempt};
pub use git::{GitCredentials, Secret};
pub use health::{HealthReporter, WorkerHealth};
pub use pipeline::{PipelineConfig, Report};
pub use worker::{WorkerConfig, WorkerError, WorkerSummary, run_worker};
