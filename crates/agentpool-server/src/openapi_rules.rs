//! The rules the server enforces on paths, queries and bodies, written into the OpenAPI
//! document where JSON Schema can state them exactly: id formats, name patterns, enums,
//! lengths, ranges and item counts. A client (or a fuzzer) that keeps to the document then
//! gets its request accepted, and one that breaks a stated rule gets a 4xx. Each rule here
//! mirrors a check in a handler or in `agentpool_core`; the schemathesis run
//! (`crates/agentpool/tests/it/schemathesis.rs`) fails when the two drift apart.

use agentpool_core::{ErrorClass, EventKind, TaskState};
use serde_json::{Value, json};

/// `WorkerId::parse`.
const WORKER_ID: &str = "^[A-Za-z0-9._-]{1,128}$";
/// Project and credential names (`routes::projects::valid_name`).
const NAME: &str = "^[A-Za-z0-9._-]{1,100}$";
/// `agentpool_core::profile::valid_name` (profiles, schedules and notifications).
const PROFILE_NAME: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";
/// `agentpool_core::spec::parse_label`: one `key=value`.
const LABEL: &str = "^[A-Za-z0-9._/-]{1,63}=([A-Za-z0-9._/-]{1,255})?$";
/// White space as the server trims and refuses it (`char::is_whitespace`, Unicode's
/// White_Space), spelled out: `\s` differs between regex dialects (ECMA-262's has U+FEFF and
/// lacks U+0085, the NEL a fuzzer found), and the document's patterns must mean the same in
/// every client's.
macro_rules! ws {
    () => {
        "\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
    };
}
/// No control character (`char::is_control`: the Cc category), and not only white space.
const NAME_TEXT: &str = concat!(
    "^[^\\x00-\\x1f\\x7f-\\x9f]*[^",
    ws!(),
    "\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
);
/// `AgentProfile::validate`: no leading '-', no white space.
const MODEL: &str = concat!("^[^", ws!(), "-][^", ws!(), "]*$");
/// `parse_label_list`: comma-separated `key=value` pairs, each trimmed, with a non-empty key;
/// blank pairs are skipped.
const LABEL_LIST: &str = concat!(
    "^[",
    ws!(),
    "]*([^,=",
    ws!(),
    "\\x00][^,=\\x00]*=[^,\\x00]*)?",
    "(,[",
    ws!(),
    "]*([^,=",
    ws!(),
    "\\x00][^,=\\x00]*=[^,\\x00]*)?)*$"
);
/// Any other text in a path or query: `ApiPath` and `ApiQuery` refuse NUL characters.
const NO_NUL: &str = "^[^\\x00]*$";

/// Add the rules to the document (as JSON).
pub(crate) fn describe(doc: &mut Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                describe_operation(path, method, op);
            }
        }
    }
    if let Some(schemas) = doc.pointer_mut("/components/schemas") {
        describe_bodies(schemas);
    }
}

fn describe_operation(path: &str, method: &str, op: &mut Value) {
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params {
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let place = p
                .get("in")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(schema) = parameter_schema(path, &place, &name) {
                merge(p.get_mut("schema"), schema);
            }
            if let Some(schema) = p.get_mut("schema").and_then(Value::as_object_mut)
                && schema.get("type").and_then(Value::as_str) == Some("string")
                && !schema.contains_key("pattern")
                && !schema.contains_key("enum")
                && !schema.contains_key("format")
            {
                schema.insert("pattern".into(), json!(NO_NUL));
            }
        }
    }
    // A claim's and a cancel's bodies are optional (`Option<…>` leaves `required` out) but,
    // when sent, an object: `null` is not accepted.
    let optional = match (path, method) {
        ("/v1/workers/{id}/claim", "post") => Some("ClaimRequest"),
        ("/v1/tasks/{id}/cancel", "post") => Some("CancelRequest"),
        _ => None,
    };
    if let Some(body) = optional
        && let Some(schema) = op.pointer_mut("/requestBody/content/application~1json/schema")
    {
        *schema = json!({ "$ref": format!("#/components/schemas/{body}") });
    }
}

fn parameter_schema(path: &str, place: &str, name: &str) -> Option<Value> {
    let task_id = json!({ "type": "string", "format": "uuid" });
    let pattern = |p: &str| json!({ "type": "string", "pattern": p });
    match (place, name) {
        ("path", "task") => Some(task_id),
        ("path", "id") if path.starts_with("/v1/tasks/") => Some(task_id),
        ("path", "id") if path.starts_with("/v1/workers/") => Some(pattern(WORKER_ID)),
        ("path", "name")
            if ["/v1/profiles/", "/v1/schedules/", "/v1/notifications/"]
                .iter()
                .any(|p| path.starts_with(p)) =>
        {
            Some(pattern(PROFILE_NAME))
        }
        ("path", "name") => Some(pattern(NAME)),
        // The task list (`/v1/tasks`, a project's builds).
        ("query", "state") => Some(json!({ "type": "string", "enum": TaskState::ALL })),
        ("query", "label") => Some(pattern(LABEL)),
        ("query", "labels") => Some(pattern(LABEL_LIST)),
        ("query", "max") => Some(json!({ "minimum": 1, "maximum": 1000 })),
        ("query", "wait") => Some(json!({ "minimum": 0, "maximum": 60 })),
        ("query", "worker") => Some(pattern(WORKER_ID)),
        ("query", "schedule") => Some(pattern(PROFILE_NAME)),
        ("query", "project") => Some(pattern(NAME)),
        ("query", "cursor") => Some(task_id),
        ("query", "class") => Some(json!({ "type": "string", "enum": ErrorClass::ALL })),
        ("query", "limit") if path.ends_with("/events") || path.ends_with("/deliveries") => {
            Some(json!({ "minimum": 1, "maximum": 1000 }))
        }
        ("query", "limit") => Some(json!({ "minimum": 1, "maximum": 500 })),
        ("query", "after") => Some(json!({ "minimum": 0 })),
        _ => None,
    }
}

fn describe_bodies(schemas: &mut Value) {
    for (pointer, rule) in body_rules() {
        merge(schemas.pointer_mut(&format!("/{pointer}")), rule);
    }
}

/// (schema pointer under `components/schemas`, rule).
fn body_rules() -> Vec<(&'static str, Value)> {
    let uuid = || json!({ "type": "string", "format": "uuid" });
    vec![
        // `routes::registration::validate_registration` (lengths in bytes; ASCII host names).
        (
            "WorkerRegistration/properties/hostname",
            json!({ "minLength": 1, "maxLength": 255, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$" }),
        ),
        // `agentpool_core::spec::label_problem`: a worker's labels follow the tasks' rule.
        (
            "WorkerRegistration/properties/labels",
            json!({ "maxProperties": 100,
                    "propertyNames": { "pattern": "^[A-Za-z0-9._/-]{1,63}$" },
                    "additionalProperties": { "type": "string", "pattern": "^([A-Za-z0-9._/-]{1,255})?$" } }),
        ),
        (
            "WorkerRegistration/properties/version",
            json!({ "maxLength": 100 }),
        ),
        (
            "WorkerRegistration/properties/agents/items/properties/version",
            json!({ "maxLength": agentpool_core::protocol::MAX_AGENT_VERSION }),
        ),
        (
            "WorkerRegistration/properties/slots",
            json!({ "minimum": 1, "maximum": 1000 }),
        ),
        (
            "WorkerRegistration/properties/id",
            json!({ "type": ["string", "null"], "pattern": WORKER_ID }),
        ),
        (
            "WorkerRegistration/properties/projects",
            json!({ "maxItems": crate::auth::MAX_PROJECTS, "uniqueItems": true,
                    "items": { "type": "string", "pattern": NAME } }),
        ),
        // The worker protocol's requests (`agentpool_core::protocol::worker`): unknown fields
        // are refused, and these are required.
        ("ClaimRequest", json!({ "additionalProperties": false })),
        (
            "ClaimRequest/properties/max",
            json!({ "minimum": 1, "maximum": 1000 }),
        ),
        (
            "ClaimRequest/properties/wait_secs",
            json!({ "minimum": 0, "maximum": 60 }),
        ),
        ("HeartbeatRequest", json!({ "additionalProperties": false })),
        (
            "HeartbeatRequest/properties/leases/items",
            json!({ "required": ["task_id", "token"] }),
        ),
        (
            "HeartbeatRequest/properties/leases/items/properties/task_id",
            uuid(),
        ),
        (
            "HeartbeatRequest/properties/status",
            json!({ "type": ["string", "null"], "enum": ["idle", "busy", "draining", "offline", "unhealthy", null] }),
        ),
        (
            "CompleteRequest",
            json!({ "additionalProperties": false, "required": ["lease_token"] }),
        ),
        (
            "CompleteBatch/properties/items",
            json!({ "minItems": 1, "maxItems": 1000 }),
        ),
        ("CompleteItem/properties/task_id", uuid()),
        (
            "FailRequest",
            json!({ "additionalProperties": false, "required": ["lease_token", "class", "message"] }),
        ),
        ("FailRequest/properties/class", json!({ "enum": ErrorClass::ALL })),
        (
            "AppendEventsRequest",
            json!({ "additionalProperties": false, "required": ["lease_token", "events"] }),
        ),
        (
            "AppendEventsRequest/properties/events/items",
            json!({ "required": ["kind", "data"] }),
        ),
        (
            "AppendEventsRequest/properties/events/items/properties/kind",
            json!({ "enum": EventKind::ALL }),
        ),
        // `routes::projects::validate`: the name and the repository are required.
        ("ProjectSpec", json!({ "required": ["name", "repo"] })),
        ("ProjectSpec/properties/name", json!({ "pattern": NAME })),
        // `routes::tokens::create`.
        (
            "TokenCreate/properties/name",
            json!({ "minLength": 1, "maxLength": 100, "pattern": NAME_TEXT }),
        ),
        (
            "TokenCreate/properties/role",
            json!({ "enum": ["admin", "submitter", "worker"] }),
        ),
        // `routes::tasks::cancel`.
        ("CancelRequest", json!({ "additionalProperties": false })),
        (
            "CancelRequest/properties/reason",
            json!({ "minLength": 1, "maxLength": agentpool_core::protocol::MAX_CANCEL_REASON_CHARS, "pattern": NAME_TEXT }),
        ),
        // `routes::bulk`: ids as `checked_ids` takes them, a reason as a single cancel's.
        (
            "BulkCancel",
            json!({ "additionalProperties": false, "required": ["ids"] }),
        ),
        ("BulkCancel/properties/ids", bulk_ids()),
        ("BulkCancel/properties/ids/items", json!({ "format": "uuid" })),
        (
            "BulkCancel/properties/reason",
            json!({ "minLength": 1, "maxLength": agentpool_core::protocol::MAX_CANCEL_REASON_CHARS, "pattern": NAME_TEXT }),
        ),
        (
            "BulkRetry",
            json!({ "additionalProperties": false, "required": ["ids"] }),
        ),
        ("BulkRetry/properties/ids", bulk_ids()),
        ("BulkRetry/properties/ids/items", json!({ "format": "uuid" })),
        // `routes::projects::put_credential`.
        (
            "CredentialValue/properties/value",
            json!({
                "minLength": agentpool_core::redact::Redactor::MIN_LEN,
                "maxLength": crate::routes::projects::MAX_CREDENTIAL_CHARS
            }),
        ),
        // `ScheduleSpec::validate`: the expression's length (its syntax is croner's).
        (
            "ScheduleSpec/properties/cron",
            json!({ "minLength": 1, "maxLength": 200 }),
        ),
        // `AgentProfile::validate`.
        (
            "AgentProfile/properties/max_turns",
            json!({ "minimum": 1, "maximum": 10000 }),
        ),
        (
            "AgentProfile/properties/model",
            json!({ "maxLength": 200, "pattern": MODEL }),
        ),
    ]
}

/// How many ids a bulk cancel or retry names.
fn bulk_ids() -> Value {
    json!({ "minItems": 1, "maxItems": agentpool_core::protocol::MAX_BULK_TASKS })
}

/// Copy `rule`'s keys into `target` (a schema object).
fn merge(target: Option<&mut Value>, rule: Value) {
    if let (Some(Value::Object(t)), Value::Object(r)) = (target, rule) {
        for (k, v) in r {
            t.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A renamed schema or field would make a rule silently apply to nothing.
    #[test]
    fn every_rule_finds_its_schema_and_ids_are_described() {
        let doc: Value = serde_json::from_str(crate::routes::document_json()).unwrap();
        for (pointer, rule) in body_rules() {
            let at = doc.pointer(&format!("/components/schemas/{pointer}"));
            let at = at.unwrap_or_else(|| panic!("no schema at {pointer}"));
            for (k, v) in rule.as_object().unwrap() {
                assert_eq!(at.get(k), Some(v), "{pointer}.{k}");
            }
        }
        let task = doc
            .pointer("/paths/~1v1~1tasks~1{id}/get/parameters/0/schema")
            .unwrap();
        assert_eq!(task["format"], "uuid");
        let worker = doc
            .pointer("/paths/~1v1~1workers~1{id}/get/parameters/0/schema")
            .unwrap();
        assert_eq!(worker["pattern"], WORKER_ID);
        let claim = doc
            .pointer("/paths/~1v1~1workers~1{id}~1claim/post/requestBody/content/application~1json/schema")
            .unwrap();
        assert_eq!(claim["$ref"], "#/components/schemas/ClaimRequest");
    }
}
