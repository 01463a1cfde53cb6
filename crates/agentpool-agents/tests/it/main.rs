//! agentpool-agents integration tests: parsers over captured output, process control against
//! real processes, and the real agent CLIs run through the adapters against the scripted model
//! endpoint.

mod auth;
mod installed;
mod long_answer;
mod mcp;
mod opencode_ends;
mod parsers;
mod process;
mod real_cli;
mod resumed;
