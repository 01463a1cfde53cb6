//! The OpenAPI document: served, valid OpenAPI 3, and matching the routes the router serves
//! (both are built from one route list; this checks the router really answers each one).

use agentpool_testkit::db::Backend;
use axum::http::StatusCode;

use crate::support::router_app;

#[tokio::test]
async fn openapi_document_parses_and_lists_every_route() {
    let Some(app) = router_app(Backend::Sqlite).await else {
        return;
    };
    let r = app.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    // A real OpenAPI 3.1 parser accepts it.
    let spec = oas3::from_json(&r.text).expect("valid OpenAPI 3.1");
    assert!(spec.openapi.starts_with("3."), "{}", spec.openapi);
    let paths = spec.paths.clone().unwrap_or_default();
    let mut missing = Vec::new();
    for (method, path) in agentpool_server::route_list() {
        let Some(item) = paths.get(path) else {
            missing.push(format!("{method} {path}"));
            continue;
        };
        let op = match method.as_str() {
            "GET" => &item.get,
            "POST" => &item.post,
            "PUT" => &item.put,
            "DELETE" => &item.delete,
            "PATCH" => &item.patch,
            other => panic!("unexpected method {other}"),
        };
        if op.is_none() {
            missing.push(format!("{method} {path}"));
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document: {missing:?}"
    );
    // The router serves every documented operation: none falls through to the router's
    // "no such endpoint" or "method not allowed" answers.
    for (method, path) in agentpool_server::route_list() {
        let uri = path
            .replace("{id}", "w-1")
            .replace("{task}", "0190aaaa-0000-7000-8000-000000000000")
            .replace("{name}", "demo");
        let r = app.call(method.as_str(), &uri, None, None).await;
        let code = r.body["error"]["code"].as_str().unwrap_or_default().to_string();
        assert!(
            r.status != StatusCode::METHOD_NOT_ALLOWED
                && !(r.status == StatusCode::NOT_FOUND && r.body["error"]["message"] == "no such endpoint"),
            "{method} {path} is documented but not served: {} {code}",
            r.status
        );
    }
    // And nothing documented that the router does not serve.
    let routes = agentpool_server::route_list();
    let documented: usize = paths
        .values()
        .map(|i| {
            [&i.get, &i.post, &i.put, &i.delete, &i.patch]
                .iter()
                .filter(|o| o.is_some())
                .count()
        })
        .sum();
    assert_eq!(documented, routes.len());
    // The error shape is a named component.
    let v: serde_json::Value = serde_json::from_str(&r.text).expect("json");
    let err = &v["components"]["schemas"]["ErrorBody"];
    assert!(err["properties"]["error"].is_object(), "{err}");
    let detail = &v["components"]["schemas"]["ErrorDetail"]["properties"];
    for f in ["code", "message", "details"] {
        assert!(detail[f].is_object(), "ErrorDetail lacks {f}");
    }
    assert!(v["components"]["securitySchemes"]["bearer"].is_object());
    // Domain schemas list their real properties (derived from the serde form of the types).
    let schemas = &v["components"]["schemas"];
    for (schema, props) in [
        (
            "TaskSpec",
            &[
                "kind",
                "repo",
                "prompt",
                "command",
                "agent",
                "labels",
                "depends_on",
                "credentials",
            ][..],
        ),
        (
            "Task",
            &["id", "spec", "state", "attempts", "lease_token", "result"][..],
        ),
        ("TaskDetail", &["id", "state", "attempts_detail", "waiting"][..]),
        ("Worker", &["id", "status", "slots", "agents"][..]),
        (
            "FailRequest",
            &["lease_token", "class", "message", "retry_after_secs"][..],
        ),
    ] {
        for p in props {
            assert!(
                schemas[schema]["properties"][*p].is_object(),
                "schema {schema} lacks property {p}: {}",
                schemas[schema]
            );
        }
    }
    assert_eq!(schemas["Task"]["properties"]["created_at"]["format"], "date-time");
    // A cancel's body, `{ "reason" }`, may be left out.
    let cancel = &v["paths"]["/v1/tasks/{id}/cancel"]["post"]["requestBody"];
    assert_ne!(cancel["required"], true, "{cancel}");
    assert_eq!(
        cancel["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CancelRequest"
    );
    assert_eq!(schemas["CancelRequest"]["properties"]["reason"]["maxLength"], 500);
    assert!(
        schemas["FailOutcome"]["oneOf"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    );
}

/// `POST /v1/tasks` is documented as the two shapes the server reads — a bare TaskSpec, or
/// `{ "tasks": [...] }` — both of which it accepts, with every refusal its extractors make.
#[tokio::test]
async fn submit_is_documented_as_the_shapes_the_server_accepts() {
    let Some(app) = router_app(Backend::Sqlite).await else {
        return;
    };
    let doc = app.call("GET", "/v1/openapi.json", None, None).await.body;
    let op = &doc["paths"]["/v1/tasks"]["post"];
    let schema = &op["requestBody"]["content"]["application/json"]["schema"];
    let shapes = schema["oneOf"].as_array().expect("oneOf of the two shapes");
    assert_eq!(shapes.len(), 2, "{schema}");
    assert_eq!(shapes[0]["$ref"], "#/components/schemas/TaskSpec", "{schema}");
    assert_eq!(shapes[1]["$ref"], "#/components/schemas/BatchSubmit", "{schema}");
    let batch = &doc["components"]["schemas"]["BatchSubmit"];
    assert!(batch["properties"]["tasks"].is_object(), "{batch}");
    let text = schema.to_string();
    assert!(
        !text.contains("\"Single\"") && !text.contains("\"Batch\""),
        "{schema}"
    );
    for code in ["200", "201", "400", "401", "403", "413", "415", "422", "503"] {
        assert!(op["responses"][code].is_object(), "{code} not documented");
    }
    let reg = &doc["components"]["schemas"]["WorkerRegistration"];
    let required: Vec<_> = reg["required"].as_array().expect("required").iter().collect();
    for field in ["hostname", "version", "agents", "slots"] {
        assert!(
            required.iter().any(|r| *r == field),
            "{field} not required: {reg}"
        );
    }
    // Both documented shapes are accepted, and the old wrapper shape is refused.
    let spec = serde_json::json!({"kind": "command", "repo": "https://example.com/r.git", "command": "true"});
    let admin = Some(app.tokens.admin.as_str());
    let r = app.json("POST", "/v1/tasks", admin, spec.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .json(
            "POST",
            "/v1/tasks",
            admin,
            serde_json::json!({"tasks": [spec.clone()]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.body["tasks"][0]["task"]["id"].is_string(), "{}", r.text);
    let r = app
        .json("POST", "/v1/tasks", admin, serde_json::json!({"Single": spec}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // Every operation with a path parameter documents the 400 a malformed one gets.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            if path.contains('{') {
                assert!(
                    op["responses"]["400"].is_object(),
                    "{method} {path}: 400 not documented"
                );
            }
        }
    }
}
