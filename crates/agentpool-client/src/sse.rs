//! Server-sent events: the byte stream of `GET /v1/tasks/{id}/events/stream` parsed into task
//! events (the `data` of each message; comments and keep-alives are skipped).

use agentpool_core::Event;
use futures::{Stream, StreamExt};

use crate::{Error, Result};

/// Parse a server-sent-events byte stream into task events (the `data` of each message);
/// a transport error becomes an [`Error`] through `on_err`.
pub fn sse_events<S, B, E, F>(bytes: S, on_err: F) -> impl Stream<Item = Result<Event>>
where
    S: Stream<Item = std::result::Result<B, E>> + Send + 'static,
    B: AsRef<[u8]>,
    F: Fn(E) -> Error,
{
    struct St<S, F> {
        inner: std::pin::Pin<Box<S>>,
        buf: Vec<u8>,
        data: String,
        on_err: F,
    }
    let st = St {
        inner: Box::pin(bytes),
        buf: Vec::new(),
        data: String::new(),
        on_err,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(pos) = st.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = st.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if st.data.is_empty() {
                        continue;
                    }
                    let data = std::mem::take(&mut st.data);
                    match serde_json::from_str::<Event>(&data) {
                        Ok(ev) => return Some((Ok(ev), st)),
                        // Not an event (a comment or keep-alive): skip it.
                        Err(_) => continue,
                    }
                } else if let Some(d) = line.strip_prefix("data:") {
                    if !st.data.is_empty() {
                        st.data.push('\n');
                    }
                    st.data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
                continue;
            }
            match st.inner.next().await {
                Some(Ok(chunk)) => st.buf.extend_from_slice(chunk.as_ref()),
                Some(Err(e)) => {
                    let e = (st.on_err)(e);
                    return Some((Err(e), st));
                }
                None => return None,
            }
        }
    })
}
