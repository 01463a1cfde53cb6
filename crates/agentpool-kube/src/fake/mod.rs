//! An in-memory stand-in for the Kubernetes API server, for tests: a `kube::Client` whose
//! transport answers calls on Jobs, Pods, Events, Secrets, Services, StatefulSets, Leases and
//! WorkerPools (create, get, list by label or field selector, watch, server-side apply,
//! replace with optimistic concurrency, the status subresource, delete with propagation and
//! owner-reference garbage collection) from memory, with the API server's status codes and
//! `Status` bodies, and records every request so tests can assert on exactly what the code
//! asked. The test
//! plays the kubelet and the Job and StatefulSet controllers by setting status.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;

mod select;

/// A response body: whole, or a watch stream that stays open.
pub type FakeBody = BoxBody<Bytes, Infallible>;

/// The namespace the fake client defaults to.
pub const NAMESPACE: &str = "agentpool";

/// One request the code under test made.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The plural resource: `jobs`, `pods`, `statefulsets`, `workerpools`, …
    pub resource: String,
    pub name: Option<String>,
    /// `status` for the status subresource.
    pub subresource: Option<String>,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

struct Watch {
    resource: String,
    selector: Vec<(String, String)>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    /// (resource, name) → object as JSON.
    objects: BTreeMap<(String, String), Value>,
    requests: Vec<Recorded>,
    refuse_jobs: Option<(u16, String, String)>,
    /// (resource, name) of objects every request is refused for, as RBAC refuses them.
    forbidden: Vec<(String, String)>,
    next_uid: u64,
    resource_version: u64,
    watches: Vec<Watch>,
    /// Every event sent, with the resource version it happened at: a watch that starts from
    /// a list's resource version is sent what happened since, as the API server does. Without
    /// it, a change made between a controller's list and its watch would never reach it.
    history: Vec<(u64, String, Value, String)>,
}

impl State {
    fn next_rv(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// Tell the watches of `resource` that `object` was added, modified or deleted.
    fn notify(&mut self, resource: &str, kind: &str, object: &Value) {
        let line = json!({"type": kind, "object": object}).to_string() + "\n";
        let rv = self.resource_version + 1;
        self.resource_version = rv;
        self.history
            .push((rv, resource.to_string(), object.clone(), line.clone()));
        self.watches.retain(|w| {
            if w.resource != resource || !select::labels_match(object, &w.selector) {
                return !w.tx.is_closed();
            }
            w.tx.send(Bytes::from(line.clone())).is_ok()
        });
    }
}

/// The stand-in. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client whose every request this stand-in answers.
    pub fn client(&self) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: http::Request<Body>| {
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.handle(req).await) }
        });
        kube::Client::new(svc, NAMESPACE)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Requests other than reads (create, delete).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// The stored object `name` of `resource` (plural), as `T`.
    pub fn get<T: serde::de::DeserializeOwned>(&self, resource: &str, name: &str) -> Option<T> {
        let v = self
            .lock()
            .objects
            .get(&(resource.into(), name.into()))
            .cloned()?;
        serde_json::from_value(v).ok()
    }

    /// Every stored object of `resource` (plural), as `T`.
    pub fn all<T: serde::de::DeserializeOwned>(&self, resource: &str) -> Vec<T> {
        let s = self.lock();
        s.objects
            .iter()
            .filter(|((r, _), _)| r == resource)
            .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
            .collect()
    }

    pub fn job(&self, name: &str) -> Option<Job> {
        self.get("jobs", name)
    }

    pub fn jobs(&self) -> Vec<Job> {
        self.all("jobs")
    }

    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.get("secrets", name)
    }

    /// Store an object as if someone had created or changed it (a pod the Job controller
    /// made, a Secret an administrator applied).
    pub fn put(&self, resource: &str, mut object: Value) {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut s = self.lock();
        s.next_uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", s.next_uid);
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(uid);
        }
        object["metadata"]["namespace"] = json!(NAMESPACE);
        object["metadata"]["resourceVersion"] = json!(s.next_rv());
        let key = (resource.to_string(), name);
        let kind = if s.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.notify(resource, kind, &object);
        s.objects.insert(key, object);
    }

    pub fn put_pod(&self, pod: &Pod) {
        self.put("pods", serde_json::to_value(pod).unwrap_or_default());
    }

    pub fn put_secret(&self, secret: &Secret) {
        self.put("secrets", serde_json::to_value(secret).unwrap_or_default());
    }

    /// Set an object's status, as its controller (or the kubelet) does.
    pub fn set_status(&self, resource: &str, name: &str, status: Value) {
        let mut s = self.lock();
        let rv = s.next_rv();
        let key = (resource.to_string(), name.to_string());
        let Some(o) = s.objects.get_mut(&key) else { return };
        o["status"] = status;
        o["metadata"]["resourceVersion"] = json!(rv);
        let v = o.clone();
        s.notify(resource, "MODIFIED", &v);
    }

    /// Set a Job's status, as the Job controller does.
    pub fn set_job_status(&self, name: &str, status: &JobStatus) {
        self.set_status("jobs", name, serde_json::to_value(status).unwrap_or_default());
    }

    /// Remove an object and, as the garbage collector does, everything it owns.
    pub fn remove(&self, resource: &str, name: &str) {
        let mut s = self.lock();
        let Some(gone) = s.objects.remove(&(resource.to_string(), name.to_string())) else {
            return;
        };
        s.notify(resource, "DELETED", &gone);
        let mut uids: Vec<String> = gone["metadata"]["uid"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect();
        while let Some(uid) = uids.pop() {
            let owned: Vec<(String, String)> = s
                .objects
                .iter()
                .filter(|(_, v)| {
                    v["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|o| o["uid"].as_str() == Some(uid.as_str())))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in owned {
                if let Some(v) = s.objects.remove(&k) {
                    s.notify(&k.0, "DELETED", &v);
                    uids.extend(v["metadata"]["uid"].as_str().map(str::to_string));
                }
            }
        }
    }

    /// Finish a deletion: remove the Job, its pods and the Secrets it owns (garbage collection).
    pub fn remove_job(&self, name: &str) {
        self.remove("jobs", name);
        let pods: Vec<String> = self
            .lock()
            .objects
            .iter()
            .filter(|((r, _), v)| r == "pods" && v["metadata"]["labels"]["job-name"].as_str() == Some(name))
            .map(|((_, n), _)| n.clone())
            .collect();
        for p in pods {
            self.remove("pods", &p);
        }
    }

    /// Refuse every Job creation from now on, as a quota or an admission webhook would.
    pub fn refuse_job_creation(&self, code: u16, reason: &str, message: &str) {
        self.lock().refuse_jobs = Some((code, reason.into(), message.into()));
    }

    /// Refuse every request for object `name` of `resource` with 403 `Forbidden`, as the
    /// API server does when the caller's Role does not grant it (a Secret outside a rule's
    /// `resourceNames`).
    pub fn forbid(&self, resource: &str, name: &str) {
        self.lock().forbidden.push((resource.into(), name.into()));
    }

    async fn handle(&self, req: http::Request<Body>) -> http::Response<FakeBody> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // /api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]] or /apis/{group}/{version}/namespaces/...
        let rest: &[&str] = match parts.as_slice() {
            ["api", "v1", "namespaces", _, rest @ ..] => rest,
            ["apis", _, _, "namespaces", _, rest @ ..] => rest,
            _ => &[],
        };
        let (resource, name, sub) = match rest {
            [r] => (r.to_string(), None, None),
            [r, n] => (r.to_string(), Some(n.to_string()), None),
            [r, n, sub] => (r.to_string(), Some(n.to_string()), Some(sub.to_string())),
            _ => return status(404, "NotFound", &format!("no route {path}")),
        };
        self.lock().requests.push(Recorded {
            method: method.clone(),
            resource: resource.clone(),
            name: name.clone(),
            subresource: sub.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        if let Some(n) = &name
            && self.lock().forbidden.contains(&(resource.clone(), n.clone()))
        {
            return status(
                403,
                "Forbidden",
                &format!(
                    "{} \"{n}\" is forbidden: User \"system:serviceaccount:{NAMESPACE}:test\" cannot access it",
                    group_of(&resource)
                ),
            );
        }
        match (method.as_str(), name) {
            ("GET", None) if query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1") => {
                self.watch(&resource, &query)
            }
            ("GET", None) => self.list(&resource, &query),
            ("GET", Some(n)) => match self.lock().objects.get(&(resource.clone(), n.clone())) {
                Some(v) => ok(200, v),
                None => not_found(&resource, &n),
            },
            ("POST", None) => self.create(&resource, body.unwrap_or(Value::Null)),
            ("PUT", Some(n)) => self.replace(&resource, &n, body.unwrap_or(Value::Null)),
            ("PATCH", Some(n)) => {
                let apply = content_type
                    .as_deref()
                    .is_some_and(|t| t.starts_with("application/apply-patch"));
                self.patch(&resource, &n, sub.as_deref(), apply, body.unwrap_or(Value::Null))
            }
            ("DELETE", Some(n)) => self.delete(&resource, &n, body),
            _ => status(405, "MethodNotAllowed", "not supported by the stand-in"),
        }
    }

    fn watch(&self, resource: &str, query: &str) -> http::Response<FakeBody> {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let since: Option<u64> = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("resourceVersion="))
            .and_then(|v| v.parse().ok());
        let selector = select::equalities(query, "labelSelector");
        let mut s = self.lock();
        // Under the same lock as the registration: nothing falls between the two.
        if let Some(since) = since {
            for (rv, r, object, line) in &s.history {
                if *rv > since && r == resource && select::labels_match(object, &selector) {
                    let _ = tx.send(Bytes::from(line.clone()));
                }
            }
        }
        s.watches.push(Watch {
            resource: resource.to_string(),
            selector,
            tx,
        });
        drop(s);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let b = rx.recv().await?;
            Some((Ok::<_, Infallible>(http_body::Frame::data(b)), rx))
        });
        let mut r = http::Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }

    fn list(&self, resource: &str, query: &str) -> http::Response<FakeBody> {
        let selector = select::equalities(query, "labelSelector");
        let fields = select::equalities(query, "fieldSelector");
        let s = self.lock();
        let items: Vec<&Value> = s
            .objects
            .iter()
            .filter(|((r, _), _)| r == resource)
            .map(|(_, v)| v)
            .filter(|v| select::labels_match(v, &selector) && select::fields_match(v, &fields))
            .collect();
        ok(
            200,
            &json!({"apiVersion": "v1", "kind": format!("{}List", kind_of(resource)),
                    "metadata": {"resourceVersion": s.resource_version.to_string()}, "items": items}),
        )
    }

    fn create(&self, resource: &str, mut object: Value) -> http::Response<FakeBody> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if resource == "jobs"
            && let Some((code, reason, message)) = self.lock().refuse_jobs.clone()
        {
            return status(code, &reason, &message);
        }
        let key = (resource.to_string(), name.clone());
        if self.lock().objects.contains_key(&key) {
            return status(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", group_of(resource)),
            );
        }
        object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        object["metadata"]["generation"] = json!(1);
        self.put(resource, object);
        let stored = self.lock().objects.get(&key).cloned().unwrap_or_default();
        ok(201, &stored)
    }

    /// PUT: replace the whole object, refused when it carries a resourceVersion other than the
    /// stored one (optimistic concurrency).
    fn replace(&self, resource: &str, name: &str, mut object: Value) -> http::Response<FakeBody> {
        let key = (resource.to_string(), name.to_string());
        let Some(old) = self.lock().objects.get(&key).cloned() else {
            return not_found(resource, name);
        };
        let want = object["metadata"]["resourceVersion"].as_str().map(str::to_string);
        if want.is_some() && want.as_deref() != old["metadata"]["resourceVersion"].as_str() {
            return status(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    group_of(resource)
                ),
            );
        }
        object["metadata"]["uid"] = old["metadata"]["uid"].clone();
        object["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
        self.put(resource, object);
        ok(200, &self.lock().objects.get(&key).cloned().unwrap_or_default())
    }

    /// PATCH: server-side apply (creating the object when absent) or a merge patch; on the
    /// status subresource only `status` changes. A change of `spec` bumps `generation`. An
    /// apply of the status replaces it: its one manager (the operator) owns every status
    /// field, so a field it no longer applies is removed, as the API server does.
    fn patch(
        &self,
        resource: &str,
        name: &str,
        sub: Option<&str>,
        apply: bool,
        patch: Value,
    ) -> http::Response<FakeBody> {
        let key = (resource.to_string(), name.to_string());
        let old = self.lock().objects.get(&key).cloned();
        let Some(mut object) = old.clone() else {
            if sub.is_some() {
                return not_found(resource, name);
            }
            let mut object = patch;
            object["metadata"]["name"] = json!(name);
            return self.create(resource, object);
        };
        if sub == Some("status") && apply {
            object["status"] = patch["status"].clone();
        } else if sub == Some("status") {
            merge(&mut object["status"], &patch["status"]);
        } else {
            let mut patch = patch;
            if let Some(m) = patch.as_object_mut() {
                m.remove("status");
            }
            merge(&mut object, &patch);
            if old.as_ref().map(|o| &o["spec"]) != Some(&object["spec"]) {
                let g = object["metadata"]["generation"].as_i64().unwrap_or(1);
                object["metadata"]["generation"] = json!(g + 1);
            }
        }
        self.put(resource, object);
        ok(200, &self.lock().objects.get(&key).cloned().unwrap_or_default())
    }

    fn delete(&self, resource: &str, name: &str, options: Option<Value>) -> http::Response<FakeBody> {
        let foreground = options
            .as_ref()
            .and_then(|o| o["propagationPolicy"].as_str())
            .is_some_and(|p| p == "Foreground");
        let key = (resource.to_string(), name.to_string());
        let mut s = self.lock();
        let Some(obj) = s.objects.get_mut(&key) else {
            drop(s);
            return not_found(resource, name);
        };
        if foreground && resource == "jobs" {
            // The Job stays, marked, until its pods are gone (the test finishes it with
            // `remove_job` once the stand-in kubelet has stopped the pod).
            obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
            obj["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
            let v = obj.clone();
            s.notify(resource, "MODIFIED", &v);
            drop(s);
            return ok(200, &v);
        }
        let v = obj.clone();
        drop(s);
        if resource == "jobs" {
            self.remove_job(name);
        } else {
            self.remove(resource, name);
        }
        ok(200, &v)
    }
}

/// Whether a Job is being deleted (foreground deletion in progress).
pub fn deleting(job: &Job) -> bool {
    job.metadata.deletion_timestamp.is_some()
}

/// JSON merge (RFC 7386 without deletions): objects merge key by key, anything else replaces.
fn merge(into: &mut Value, patch: &Value) {
    match (into.as_object_mut(), patch.as_object()) {
        (Some(a), Some(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => {
            if !patch.is_null() {
                *into = patch.clone();
            }
        }
    }
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "jobs" => "Job",
        "pods" => "Pod",
        "events" => "Event",
        "secrets" => "Secret",
        "services" => "Service",
        "statefulsets" => "StatefulSet",
        "leases" => "Lease",
        "workerpools" => "WorkerPool",
        _ => "Object",
    }
}

/// `resource.group` as the API server names objects in messages.
fn group_of(resource: &str) -> String {
    match resource {
        "jobs" => "jobs.batch".into(),
        "statefulsets" => "statefulsets.apps".into(),
        "leases" => "leases.coordination.k8s.io".into(),
        "workerpools" => "workerpools.agentpool.dev".into(),
        r => r.into(),
    }
}

fn ok(code: u16, v: &Value) -> http::Response<FakeBody> {
    respond(code, v)
}

fn not_found(resource: &str, name: &str) -> http::Response<FakeBody> {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", group_of(resource)),
    )
}

fn status(code: u16, reason: &str, message: &str) -> http::Response<FakeBody> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn respond(code: u16, v: &Value) -> http::Response<FakeBody> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut r = http::Response::new(BodyExt::boxed(Full::new(Bytes::from(bytes))));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
