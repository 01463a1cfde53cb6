//! The real worker protocol with a test's hooks around it: one forwarding [`WorkerApi`], so a
//! test writes only the calls it changes.

use super::*;

/// What a test changes about the protocol; every default forwards to the real server.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Runs before every call; an error fails the call without reaching the server.
    fn before(&self) -> Result<(), ApiError> {
        Ok(())
    }
    async fn heartbeat(
        &self,
        api: &dyn WorkerApi,
        w: &WorkerId,
        req: HeartbeatRequest,
    ) -> Result<HeartbeatReply, ApiError> {
        api.heartbeat(w, req).await
    }
    async fn complete(
        &self,
        api: &dyn WorkerApi,
        w: &WorkerId,
        t: TaskId,
        req: CompleteRequest,
    ) -> Result<(), ApiError> {
        api.complete(w, t, req).await
    }
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
        self.hooks.heartbeat(self.inner.as_ref(), w, req).await
    }
    async fn claim(&self, w: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>, ApiError> {
        self.hooks.before()?;
        self.inner.claim(w, max, wait).await
    }
    async fn append_events(&self, w: &WorkerId, t: TaskId, req: AppendEventsRequest) -> Result<(), ApiError> {
        self.hooks.before()?;
        self.inner.append_events(w, t, req).await
    }
    async fn complete(&self, w: &WorkerId, t: TaskId, req: CompleteRequest) -> Result<(), ApiError> {
        self.hooks.before()?;
        self.hooks.complete(self.inner.as_ref(), w, t, req).await
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
