//! The real worker protocol with a test's hooks around it: one forwarding [`WorkerApi`], so a
//! test writes only the calls it changes.

use super::*;

/// What a test changes about the protocol; by default nothing.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Runs before every call; an error fails the call without reaching the server.
    fn before(&self) -> Result<(), ApiError> {
        Ok(())
    }
    /// Runs before a heartbeat is sent; an error refuses it as the server would.
    async fn before_heartbeat(&self, _req: &HeartbeatRequest) -> Result<(), ApiError> {
        Ok(())
    }
    /// Sees each heartbeat's reply before the worker does.
    fn after_heartbeat(&self, _reply: &Result<HeartbeatReply, ApiError>) {}
    /// Runs after the server recorded a completion, before the worker learns it did.
    async fn after_complete(&self) {}
    /// May change each claimed task before the worker sees it.
    fn claimed(&self, _work: &mut ClaimedWork) {}
    /// Runs after the server answered a claim, before the worker learns of the answer.
    async fn after_claim(&self, _claimed: &[ClaimedWork]) {}
}

/// The server's protocol (`inner`) seen through `hooks`.
pub struct Hooked<H> {
    pub inner: Arc<dyn WorkerApi>,
    pub hooks: H,
}

/// [`api`] for `store` seen through `hooks`.
pub async fn hooked<H: Hooks>(store: &Arc<dyn Store>, lease_ttl: Duration, hooks: H) -> Arc<Hooked<H>> {
    let inner = api(store, lease_ttl).await;
    Arc::new(Hooked { inner, hooks })
}

#[async_trait]
impl<H: Hooks> WorkerApi for Hooked<H> {
    async fn register(&self, reg: WorkerRegistration) -> Result<Worker, ApiError> {
        self.hooks.before()?;
        self.inner.register(reg).await
    }
    async fn heartbeat(&self, w: &WorkerId, req: HeartbeatRequest) -> Result<HeartbeatReply, ApiError> {
        self.hooks.before()?;
        self.hooks.before_heartbeat(&req).await?;
        let reply = self.inner.heartbeat(w, req).await;
        self.hooks.after_heartbeat(&reply);
        reply
    }
    async fn claim(&self, w: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>, ApiError> {
        self.hooks.before()?;
        let mut claimed = self.inner.claim(w, max, wait).await?;
        claimed.iter_mut().for_each(|c| self.hooks.claimed(c));
        self.hooks.after_claim(&claimed).await;
        Ok(claimed)
    }
    async fn append_events(&self, w: &WorkerId, t: TaskId, req: AppendEventsRequest) -> Result<(), ApiError> {
        self.hooks.before()?;
        self.inner.append_events(w, t, req).await
    }
    async fn complete(&self, w: &WorkerId, t: TaskId, req: CompleteRequest) -> Result<(), ApiError> {
        self.hooks.before()?;
        let done = self.inner.complete(w, t, req).await;
        self.hooks.after_complete().await;
        done
    }
    async fn fail(&self, w: &WorkerId, t: TaskId, req: FailRequest) -> Result<FailOutcome, ApiError> {
        self.hooks.before()?;
        self.inner.fail(w, t, req).await
    }
    async fn drain(&self, w: &WorkerId) -> Result<(), ApiError> {
        self.hooks.before()?;
        self.inner.drain(w).await
    }
    async fn deregister(&self, w: &WorkerId) -> Result<(), ApiError> {
        self.hooks.before()?;
        self.inner.deregister(w).await
    }
}
