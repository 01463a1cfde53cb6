//! The wire types the handlers speak, with the named schemas of the OpenAPI document: all
//! defined once in `agentpool_core::protocol` (shared with the client), gathered here for the
//! routes.

pub use agentpool_core::protocol::openapi::*;
pub use agentpool_core::protocol::*;
