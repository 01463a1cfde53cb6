//! The task API and the administration around it: tasks, events, workers as an operator sees
//! them, projects, builds, credentials and agent profiles.

use agentpool_core::profile::{AgentProfile, Profile, ProfileList};
use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::{
    BatchSubmit, BatchSubmitted, BuildRequest, BulkCancel, BulkCanceled, BulkRetried, BulkRetry,
    CancelRequest, CreateAndBuild, CreatedBuild, CreatedToken, CredentialList, CredentialValue, Enqueued,
    EventPage, ProjectList, QueueStats, QueueStatsQuery, Retried, RotatedToken, TaskDetail, TaskListQuery,
    TaskPage, TokenCreate, TokenInfo, TokenList, TokenRotate, WorkerList,
};
use agentpool_core::{Event, Labels, Project, Task, TaskId, TaskSpec, Worker, WorkerId};
use futures::Stream;
use reqwest::Method;

use crate::{Client, Error, Result, seg, sse_events};

impl Client {
    pub async fn submit(&self, spec: &TaskSpec) -> Result<Enqueued> {
        self.call(Method::POST, "/v1/tasks", spec).await
    }

    /// Submit several tasks in one transaction: all are enqueued, or none.
    pub async fn submit_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>> {
        let out: BatchSubmitted = self
            .call(Method::POST, "/v1/tasks", &BatchSubmit { tasks: specs })
            .await?;
        Ok(out.tasks)
    }

    pub async fn list_tasks(&self, q: &TaskListQuery) -> Result<TaskPage> {
        self.json(self.req(Method::GET, "/v1/tasks").query(q)).await
    }

    pub async fn get_task(&self, id: TaskId) -> Result<TaskDetail> {
        self.get(&format!("/v1/tasks/{id}")).await
    }

    pub async fn cancel(&self, id: TaskId) -> Result<Task> {
        self.json(self.req(Method::POST, &format!("/v1/tasks/{id}/cancel")))
            .await
    }

    /// [`Client::cancel`], saying why: the task's message and events keep the request's
    /// reason (see [`CancelRequest::fitted`] for one a program writes).
    pub async fn cancel_because(&self, id: TaskId, why: &CancelRequest) -> Result<Task> {
        self.call(Method::POST, &format!("/v1/tasks/{id}/cancel"), why)
            .await
    }

    /// Queue a failed or canceled task again; the reply names the dependents queued with it.
    pub async fn retry(&self, id: TaskId) -> Result<Retried> {
        self.json(self.req(Method::POST, &format!("/v1/tasks/{id}/retry")))
            .await
    }

    /// Cancel up to [`MAX_BULK_TASKS`](agentpool_core::protocol::MAX_BULK_TASKS) tasks in
    /// one request (one transaction on the server); those it does not apply to are listed in
    /// the reply's `skipped`.
    pub async fn cancel_many(&self, req: &BulkCancel) -> Result<BulkCanceled> {
        self.call(Method::POST, "/v1/tasks/cancel", req).await
    }

    /// Retry up to [`MAX_BULK_TASKS`](agentpool_core::protocol::MAX_BULK_TASKS) tasks in one
    /// request, as [`Client::cancel_many`] cancels them.
    pub async fn retry_many(&self, ids: &[TaskId]) -> Result<BulkRetried> {
        let req = BulkRetry { ids: ids.to_vec() };
        self.call(Method::POST, "/v1/tasks/retry", &req).await
    }

    /// One page of a task's events: those with `seq > after`, at most `limit`.
    pub async fn events(&self, id: TaskId, after: i64, limit: u32) -> Result<EventPage> {
        self.json(
            self.req(Method::GET, &format!("/v1/tasks/{id}/events"))
                .query(&[("after", after.to_string()), ("limit", limit.to_string())]),
        )
        .await
    }

    /// Follow a task's events live from `after` (0: from the start). The stream ends when the
    /// task has finished and its last events arrived, or when the connection drops. To resume
    /// after a disconnect, call again with the last `seq` seen (sent as `Last-Event-ID`).
    pub async fn stream_events(
        &self,
        id: TaskId,
        after: i64,
    ) -> Result<impl Stream<Item = Result<Event>> + use<>> {
        let r = self
            .req(Method::GET, &format!("/v1/tasks/{id}/events/stream"))
            .header("Last-Event-ID", after.to_string())
            .header("Accept", "text/event-stream");
        let limit = self.limit(None);
        let resp = self.send(r, limit).await?;
        let base = self.base.clone();
        Ok(sse_events(resp.bytes_stream(), move |e| {
            Error::transport(&base, e, limit)
        }))
    }

    // ---- workers, as an operator sees them ----

    pub async fn list_workers(&self) -> Result<Vec<Worker>> {
        let l: WorkerList = self.get("/v1/workers").await?;
        Ok(l.workers)
    }

    pub async fn get_worker(&self, id: &WorkerId) -> Result<Worker> {
        self.get(&format!("/v1/workers/{id}")).await
    }

    /// Ask a worker to finish what it runs and take nothing new.
    pub async fn drain_worker(&self, id: &WorkerId) -> Result<Worker> {
        self.json(self.req(Method::POST, &format!("/v1/workers/{id}/drain")))
            .await
    }

    /// Queue statistics for the workers with `labels` (any labels when `None`) offering
    /// `agents` (any agent when empty) and limited to `projects` (any task when empty):
    /// matching queued and running work and those workers by status.
    pub async fn queue_stats(
        &self,
        labels: Option<&Labels>,
        agents: &[String],
        projects: &[String],
    ) -> Result<QueueStats> {
        let q = QueueStatsQuery {
            labels: labels.map(|l| {
                l.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            agents: (!agents.is_empty()).then(|| agents.join(",")),
            projects: (!projects.is_empty()).then(|| projects.join(",")),
        };
        self.json(self.req(Method::GET, "/v1/queue/stats").query(&q))
            .await
    }

    // ---- projects, builds, credentials ----

    pub async fn put_project(&self, spec: &ProjectSpec) -> Result<Project> {
        self.call(Method::PUT, &format!("/v1/projects/{}", seg(&spec.name)), spec)
            .await
    }

    pub async fn get_project(&self, name: &str) -> Result<Project> {
        self.get(&format!("/v1/projects/{}", seg(name))).await
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>> {
        let l: ProjectList = self.get("/v1/projects").await?;
        Ok(l.projects)
    }

    pub async fn delete_project(&self, name: &str) -> Result<()> {
        self.delete(&format!("/v1/projects/{}", seg(name))).await
    }

    pub async fn submit_build(&self, project: &str, b: &BuildRequest) -> Result<Enqueued> {
        self.call(Method::POST, &format!("/v1/projects/{}/builds", seg(project)), b)
            .await
    }

    /// Create or update a project and submit its build in one call.
    pub async fn create_and_build(&self, req: &CreateAndBuild) -> Result<CreatedBuild> {
        self.call(Method::POST, "/v1/builds", req).await
    }

    pub async fn list_builds(&self, project: &str) -> Result<TaskPage> {
        self.get(&format!("/v1/projects/{}/builds", seg(project))).await
    }

    // ---- profiles ----

    pub async fn put_profile(&self, name: &str, settings: &AgentProfile) -> Result<Profile> {
        self.call(Method::PUT, &format!("/v1/profiles/{}", seg(name)), settings)
            .await
    }

    pub async fn get_profile(&self, name: &str) -> Result<Profile> {
        self.get(&format!("/v1/profiles/{}", seg(name))).await
    }

    pub async fn list_profiles(&self) -> Result<Vec<Profile>> {
        let l: ProfileList = self.get("/v1/profiles").await?;
        Ok(l.profiles)
    }

    pub async fn delete_profile(&self, name: &str) -> Result<()> {
        self.delete(&format!("/v1/profiles/{}", seg(name))).await
    }

    pub async fn put_credential(&self, name: &str, value: &str) -> Result<()> {
        let body = CredentialValue {
            value: value.to_string(),
        };
        self.call_empty(
            Method::PUT,
            &format!("/v1/credentials/{}", seg(name)),
            Some(&body),
        )
        .await
    }

    /// Credential names (values are never returned).
    pub async fn list_credentials(&self) -> Result<Vec<String>> {
        let l: CredentialList = self.get("/v1/credentials").await?;
        Ok(l.names)
    }

    pub async fn delete_credential(&self, name: &str) -> Result<()> {
        self.delete(&format!("/v1/credentials/{}", seg(name))).await
    }

    /// Create a token (admin); the answer holds its value, shown this once.
    pub async fn create_token(&self, req: &TokenCreate) -> Result<CreatedToken> {
        self.call(Method::POST, "/v1/tokens", req).await
    }

    /// Tokens (admin), never their values.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let l: TokenList = self.get("/v1/tokens").await?;
        Ok(l.tokens)
    }

    /// Rotate a token (admin): its successor, with its value shown this once, and when the
    /// token rotated stops working.
    pub async fn rotate_token(&self, id: &str, req: &TokenRotate) -> Result<RotatedToken> {
        self.call(Method::POST, &format!("/v1/tokens/{}/rotate", seg(id)), req)
            .await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        self.delete(&format!("/v1/tokens/{}", seg(id))).await
    }
}
