//! agentpool-agents integration tests: parsers over captured output, and the real agent CLIs
//! run through the adapters against the scripted model endpoint.

mod parsers;
mod real_cli;
