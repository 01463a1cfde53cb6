//! A task's cost limit (`max_cost_usd`): watches the usage events an agent emits, adds up the
//! cost they report, and stops the agent as soon as the sum passes the limit.
//!
//! Only reported cost counts. Agents that report tokens but no cost (Codex, Gemini CLI) cannot
//! be held to a limit: no prices are invented to turn tokens into dollars.

use std::sync::Arc;
use std::sync::Mutex;

use agentpool_agents::EventSink;
use agentpool_core::{EventPayload, NewEvent};
use tokio_util::sync::CancellationToken;

/// An [`EventSink`] that passes every event on and stops the agent (by cancelling `stop`)
/// once the reported cost passes `limit_usd`.
pub struct CostWatch {
    inner: Arc<dyn EventSink>,
    limit_usd: f64,
    stop: CancellationToken,
    /// Sum of the cost of the usage events seen so far, and whether it passed the limit.
    state: Mutex<(f64, bool)>,
}

impl CostWatch {
    pub fn new(inner: Arc<dyn EventSink>, limit_usd: f64, stop: CancellationToken) -> Self {
        Self {
            inner,
            limit_usd,
            stop,
            state: Mutex::new((0.0, false)),
        }
    }

    /// The cost reported so far through usage events.
    pub fn spent(&self) -> f64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Whether the limit was passed, by the usage events or by the cost in the agent's final
    /// result (`final_cost`), whichever is larger.
    pub fn exceeded(&self, final_cost: Option<f64>) -> Option<f64> {
        let (spent, over) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        let cost = final_cost.unwrap_or(0.0).max(spent);
        (over || cost > self.limit_usd).then_some(cost)
    }
}

impl EventSink for CostWatch {
    fn emit(&self, event: NewEvent) {
        if let EventPayload::Usage {
            cost_usd: Some(c), ..
        } = &event.payload
            && c.is_finite()
            && *c > 0.0
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.0 += c;
            if st.0 > self.limit_usd && !st.1 {
                st.1 = true;
                drop(st);
                // Stops the agent's process group (SIGTERM, then SIGKILL after the grace).
                self.stop.cancel();
            }
        }
        self.inner.emit(event);
    }
}
