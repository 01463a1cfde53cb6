//! Events: batched append, ordered listing with a cursor.

use agentpool_core::{EventKind, EventPayload, NewEvent};

use crate::both;
use crate::harness::{Harness, cmd};

both!(
    events_page_in_order_with_a_cursor,
    concurrent_appends_keep_each_writers_order,
);

/// Four writers append batches to one task at once (a worker's agent events and the server's
/// lifecycle events, say): nothing is lost and each writer's events keep their order.
async fn concurrent_appends_keep_each_writers_order(h: Harness) {
    let id = h.submit(cmd("x")).await;
    let mut handles = Vec::new();
    for w in 0..4 {
        let store = h.store.clone();
        handles.push(tokio::spawn(async move {
            for b in 0..25 {
                let batch = (0..4)
                    .map(|i| NewEvent::log("stdout", format!("{w} {}", b * 4 + i)))
                    .collect();
                store.append_events(id, None, batch).await.unwrap();
            }
        }));
    }
    for hd in handles {
        hd.await.unwrap();
    }
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = h.store.list_events(id, after, 37).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        all.extend(page);
    }
    // The store's own `queued` event comes first.
    assert_eq!(all.len(), 401);
    assert_eq!(all[0].kind(), EventKind::Lifecycle);
    let mut next = [0u32; 4];
    for e in &all[1..] {
        let data = e.data();
        let line = data["line"].as_str().unwrap();
        let (w, n) = line.split_once(' ').unwrap();
        let (w, n): (usize, u32) = (w.parse().unwrap(), n.parse().unwrap());
        assert_eq!(n, next[w], "writer {w} out of order");
        next[w] += 1;
    }
}

async fn events_page_in_order_with_a_cursor(h: Harness) {
    let id = h.submit(cmd("x")).await;
    let queued = h.store.list_events(id, 0, 10).await.unwrap();
    assert_eq!(queued.len(), 1, "the queued event");
    let other = h.submit(cmd("y")).await;
    let batch: Vec<_> = (0..5)
        .map(|i| NewEvent::log("stdout", format!("line {i}")))
        .collect();
    h.store.append_events(id, None, batch).await.unwrap();
    h.store
        .append_events(other, None, vec![NewEvent::log("stdout", "other task")])
        .await
        .unwrap();
    h.store
        .append_events(
            id,
            None,
            vec![NewEvent::new(EventPayload::Usage {
                input_tokens: 1,
                output_tokens: 2,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                cost_usd: None,
            })],
        )
        .await
        .unwrap();
    let p1 = h.store.list_events(id, queued[0].seq, 2).await.unwrap();
    assert_eq!(p1.len(), 2);
    assert_eq!(p1[0].data()["line"], "line 0");
    assert_eq!(p1[1].data()["line"], "line 1");
    let p2 = h.store.list_events(id, p1[1].seq, 10).await.unwrap();
    assert_eq!(p2.len(), 4);
    assert_eq!(p2[0].data()["line"], "line 2");
    assert_eq!(p2[3].kind(), EventKind::Usage);
    assert!(p2.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(p2.iter().all(|e| e.task_id == id));
    assert!(h.store.list_events(id, p2[3].seq, 10).await.unwrap().is_empty());
    let missing = agentpool_core::TaskId::new();
    assert!(
        h.store
            .append_events(missing, None, vec![NewEvent::log("stdout", "x")])
            .await
            .is_err()
    );
}
