//! agentpool's GitHub integration, as a library the server drives: webhook signature checks
//! ([`signature`]), the payload fields agentpool reads ([`payload`]), which events start which
//! tasks ([`trigger`]), prompt templates ([`template`]), the status comment's text
//! ([`status`]), the REST client ([`client`]) and GitHub App authentication ([`app`]); and the
//! pull requests of Forgejo and Gitea ([`forgejo`]), through the same [`PullRequests`].
//! Nothing here touches the queue: the server enqueues, records and retries.

// The product's code returns and reports its failures; only its tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod client;
pub mod forgejo;
pub mod http;
pub mod payload;
pub mod signature;
pub mod status;
pub mod template;
pub mod trigger;

pub use app::{AppKey, GithubApp, InstallationToken, Permissions};
pub use client::{GithubClient, NewPull, PullInfo, PullRequests, ReviewComment};
pub use forgejo::ForgejoClient;
pub use http::{Forge, ForgeError};
pub use trigger::{Decision, OpenedPr, Trigger, TriggerKind};
