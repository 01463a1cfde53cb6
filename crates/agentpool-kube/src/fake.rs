//! An in-memory stand-in for the Kubernetes API server, for tests: a `kube::Client` whose
//! transport answers Job, Pod and Secret calls (create, get, list by label selector, delete
//! with propagation) from memory, with the API server's status codes and `Status` bodies, and
//! records every request so tests can assert on exactly what the code asked. The test plays
//! the kubelet and the Job controller by setting pod and Job status.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::client::Body;
use serde_json::{Value, json};

/// The namespace the fake client defaults to.
pub const NAMESPACE: &str = "agentpool";

/// One request the code under test made.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// `jobs`, `pods` or `secrets`.
    pub resource: String,
    pub name: Option<String>,
    pub query: String,
    pub body: Option<Value>,
}

#[derive(Default)]
struct State {
    /// (resource, name) → object as JSON.
    objects: BTreeMap<(String, String), Value>,
    requests: Vec<Recorded>,
    refuse_jobs: Option<(u16, String, String)>,
    next_uid: u64,
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

    fn get<T: serde::de::DeserializeOwned>(&self, resource: &str, name: &str) -> Option<T> {
        let v = self
            .lock()
            .objects
            .get(&(resource.into(), name.into()))
            .cloned()?;
        serde_json::from_value(v).ok()
    }

    fn all<T: serde::de::DeserializeOwned>(&self, resource: &str) -> Vec<T> {
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

    /// Store an object as if someone had created it (a pod the Job controller made, a Secret
    /// an operator applied).
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
        s.objects.insert((resource.into(), name), object);
    }

    pub fn put_pod(&self, pod: &Pod) {
        self.put("pods", serde_json::to_value(pod).unwrap_or_default());
    }

    pub fn put_secret(&self, secret: &Secret) {
        self.put("secrets", serde_json::to_value(secret).unwrap_or_default());
    }

    /// Set a Job's status, as the Job controller does.
    pub fn set_job_status(&self, name: &str, status: &JobStatus) {
        let mut s = self.lock();
        if let Some(j) = s.objects.get_mut(&("jobs".to_string(), name.to_string())) {
            j["status"] = serde_json::to_value(status).unwrap_or_default();
        }
    }

    /// Finish a deletion: remove the Job, its pods and the Secrets it owns (garbage collection).
    pub fn remove_job(&self, name: &str) {
        let mut s = self.lock();
        let uid = s
            .objects
            .remove(&("jobs".to_string(), name.to_string()))
            .and_then(|j| j["metadata"]["uid"].as_str().map(str::to_string));
        s.objects.retain(|(r, _), v| {
            let owned = v["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["uid"].as_str() == uid.as_deref()));
            let pod_of_job = r == "pods" && v["metadata"]["labels"]["job-name"].as_str() == Some(name);
            !owned && !pod_of_job
        });
    }

    /// Refuse every Job creation from now on, as a quota or an admission webhook would.
    pub fn refuse_job_creation(&self, code: u16, reason: &str, message: &str) {
        self.lock().refuse_jobs = Some((code, reason.into(), message.into()));
    }

    async fn handle(&self, req: http::Request<Body>) -> http::Response<Body> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // /api/v1/namespaces/{ns}/{resource}[/{name}] or /apis/batch/v1/namespaces/...
        let rest: &[&str] = match parts.as_slice() {
            ["api", "v1", "namespaces", _, rest @ ..] => rest,
            ["apis", "batch", "v1", "namespaces", _, rest @ ..] => rest,
            _ => &[],
        };
        let (resource, name) = match rest {
            [r] => (r.to_string(), None),
            [r, n] => (r.to_string(), Some(n.to_string())),
            _ => return status(404, "NotFound", &format!("no route {path}")),
        };
        self.lock().requests.push(Recorded {
            method: method.clone(),
            resource: resource.clone(),
            name: name.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        match (method.as_str(), name) {
            ("GET", None) => self.list(&resource, &query),
            ("GET", Some(n)) => match self.lock().objects.get(&(resource.clone(), n.clone())) {
                Some(v) => ok(200, v),
                None => not_found(&resource, &n),
            },
            ("POST", None) => self.create(&resource, body.unwrap_or(Value::Null)),
            ("DELETE", Some(n)) => self.delete(&resource, &n, body),
            _ => status(405, "MethodNotAllowed", "not supported by the stand-in"),
        }
    }

    fn list(&self, resource: &str, query: &str) -> http::Response<Body> {
        let selector: Vec<(String, String)> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("labelSelector="))
            .flat_map(|s| decode(s).split(',').map(str::to_string).collect::<Vec<_>>())
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let s = self.lock();
        let items: Vec<&Value> = s
            .objects
            .iter()
            .filter(|((r, _), _)| r == resource)
            .map(|(_, v)| v)
            .filter(|v| {
                selector
                    .iter()
                    .all(|(k, want)| v["metadata"]["labels"][k].as_str() == Some(want.as_str()))
            })
            .collect();
        let kind = match resource {
            "jobs" => "JobList",
            "pods" => "PodList",
            _ => "SecretList",
        };
        ok(
            200,
            &json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}),
        )
    }

    fn create(&self, resource: &str, mut object: Value) -> http::Response<Body> {
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
            let group = if resource == "jobs" {
                "jobs.batch"
            } else {
                resource
            };
            return status(
                409,
                "AlreadyExists",
                &format!("{group} \"{name}\" already exists"),
            );
        }
        object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        object["metadata"]["resourceVersion"] = json!("1");
        self.put(resource, object);
        let stored = self.lock().objects.get(&key).cloned().unwrap_or_default();
        ok(201, &stored)
    }

    fn delete(&self, resource: &str, name: &str, options: Option<Value>) -> http::Response<Body> {
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
            drop(s);
            return ok(200, &v);
        }
        let v = obj.clone();
        drop(s);
        if resource == "jobs" {
            self.remove_job(name);
        } else {
            self.lock().objects.remove(&key);
        }
        ok(200, &v)
    }
}

/// Whether a Job is being deleted (foreground deletion in progress).
pub fn deleting(job: &Job) -> bool {
    job.metadata.deletion_timestamp.is_some()
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ok(code: u16, v: &Value) -> http::Response<Body> {
    respond(code, v)
}

fn not_found(resource: &str, name: &str) -> http::Response<Body> {
    let group = if resource == "jobs" {
        "jobs.batch"
    } else {
        resource
    };
    status(404, "NotFound", &format!("{group} \"{name}\" not found"))
}

fn status(code: u16, reason: &str, message: &str) -> http::Response<Body> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn respond(code: u16, v: &Value) -> http::Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut r = http::Response::new(Body::from(bytes));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
