//! agentpool's worker runtime: the git workspace pipeline (clone or warm mirror, work branch,
//! commit, push), process control for commands and agents, and the worker loop that registers,
//! heartbeats, claims and reports through a [`WorkerApi`] — in-process over a store, or over
//! HTTP.

pub mod git;
pub mod process;
pub mod workspace;
