//! An unhealthy worker whose git or agents could not be started checks, at growing intervals,
//! whether they start again: git and `sh` run, a task's private directory can be made, and
//! every agent it offers is installed. Once they do, it registers again (the server keeps a
//! worker unhealthy until then) and claims tasks again. The check runs nothing of a task, so a
//! cause it cannot see (a full disk that lets a directory be made) costs a few more tasks
//! handed back, without using their attempts, before the next check. A worker whose own agent
//! key was refused does not check: only a new key mends that, and it comes with a restart.

use super::*;
use crate::self_check::self_check;

/// The longest pause between two checks.
const MAX_PAUSE: Duration = Duration::from_secs(30 * 60);

pub(super) async fn recheck_loop(shared: Arc<Shared>, first: Duration, stop: CancellationToken) {
    if first.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = shared.became_unhealthy() => {}
            _ = stop.cancelled() => return,
        }
        let Some(sick) = shared.unhealthy.borrow().clone() else {
            continue;
        };
        if !sick.recheck {
            return;
        }
        let mut pause = first;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return,
            }
            pause = (pause * 2).min(MAX_PAUSE);
            if shared.draining.load(Ordering::SeqCst) {
                // Going away: nothing more to claim, and its probe keeps saying why.
                return;
            }
            let why = match self_check(&shared.pipeline, None).await {
                Ok(()) => {
                    // Healthy first, so that no beat between the registration and the
                    // recovery tells the server it is unhealthy again.
                    shared.recover();
                    let registered = {
                        let _one_at_a_time = shared.registering.lock().await;
                        heartbeat::register(&*shared.api, shared.registration(), &stop).await
                    };
                    match registered {
                        Ok(Some(_)) => break,
                        Ok(None) => return,
                        Err(e) => format!("it could not register again: {e}"),
                    }
                }
                Err(why) => why,
            };
            if !shared.is_unhealthy() {
                shared.turn_unhealthy(sick.clone());
            }
            tracing::info!("this worker is still unhealthy: {why}; checking again in {pause:?}");
        }
        tracing::info!("git and the agents start again: this worker claims tasks again");
    }
}
