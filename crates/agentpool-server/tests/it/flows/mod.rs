//! Over a real socket (`spawn_app` on port 0): every endpoint through the typed client, the
//! stale-lease 409, cancel reaching a running task, SSE resume, and the long poll.

mod bulk;
mod endpoints;
pub(crate) mod leases;
mod streams;
