//! agentpool's GitHub integration, as a library the server drives: webhook signature checks
//! ([`signature`]), the payload fields agentpool reads ([`payload`]), which events start which
//! tasks ([`trigger`]), prompt templates ([`template`]), the status comment's text
//! ([`status`]) and the REST client ([`client`]). Nothing here touches the queue: the server
//! enqueues, records and retries.

pub mod client;
pub mod payload;
pub mod signature;
pub mod status;
pub mod template;
pub mod trigger;

pub use client::{GithubClient, GithubError, NewPull, PullInfo};
pub use trigger::{Decision, OpenedPr, Trigger, TriggerKind};
