//! agentpool-agents integration tests: parsers over captured output, process control against
//! real processes, and the real agent CLIs run through the adapters against the scripted model
//! endpoint.

mod auth;
mod installed;
mod mcp;
mod parsers;
mod process;
mod real_cli;
