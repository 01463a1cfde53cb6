//! Integration tests of agentpool-runner against real processes, real git (a smart-HTTP server
//! with basic auth) and a real SQLite store.

mod agents;
mod attempt;
mod checks;
mod crash;
mod finishing;
mod follow_ups;
mod forgejo;
mod github;
mod heartbeat;
mod http;
mod infra;
mod own_key;
mod private_state;
mod report_race;
mod results;
mod secrets;
mod warm;
mod worker;
mod workspace;
