//! The client against a real server on a free port (fresh SQLite database per test): each
//! kind of refusal arrives as the error that means it.

use std::sync::Arc;
use std::time::Duration;

use agentpool_client::{Client, ClientConfig, Error};
use agentpool_core::protocol::FailRequest;
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{ErrorClass, TaskId, TaskResult, TaskSpec};
use agentpool_server::RunningServer;
use agentpool_store::Store;
use agentpool_testkit::db::TestDb;

struct Env {
    client: Client,
    server: RunningServer,
    _store: Arc<dyn Store>,
    _db: TestDb,
}

async fn env() -> Env {
    let db = TestDb::sqlite();
    let store = agentpool_store::open_store(db.url()).await.unwrap();
    let server = agentpool_server::serve_loopback(store.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    Env {
        client: Client::new(&server.url(), None).unwrap(),
        server,
        _store: store,
        _db: db,
    }
}

fn registration() -> WorkerRegistration {
    agentpool_testkit::worker::registration(None, &["command"], 1)
}

#[tokio::test]
async fn a_report_with_a_lease_that_is_no_longer_held_is_a_stale_lease() {
    let env = env().await;
    let c = &env.client;
    let w = c.register(&registration()).await.unwrap();
    let task = c
        .submit(&TaskSpec::command("https://example.com/r.git", "true"))
        .await
        .unwrap()
        .task;
    let claimed = c.claim(&w.id, 1, Duration::ZERO).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let token = claimed[0].claimed.lease.token;
    c.complete(&w.id, task.id, token, TaskResult::default())
        .await
        .unwrap();

    // The attempt is over: the same lease is refused for everything.
    let e = c
        .complete(&w.id, task.id, token, TaskResult::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StaleLease(_)), "{e:?}");
    assert!(!e.is_transient());
    let fail = FailRequest {
        lease_token: token,
        class: ErrorClass::AgentError,
        message: "late".into(),
        retry_after_secs: None,
        result: None,
    };
    let e = c.fail(&w.id, task.id, &fail).await.unwrap_err();
    assert!(e.is_stale_lease(), "{e:?}");
}

#[tokio::test]
async fn an_unknown_task_is_not_found() {
    let env = env().await;
    let id = TaskId::new();
    let e = env.client.get_task(id).await.unwrap_err();
    assert!(
        matches!(&e, Error::NotFound(m) if m.contains(&id.to_string())),
        "{e:?}"
    );
    assert_eq!(e.status(), Some(reqwest::StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn an_invalid_task_is_rejected_with_the_server_code_and_each_field_path() {
    let env = env().await;
    let spec = TaskSpec::command("", "");
    let e = env.client.submit(&spec).await.unwrap_err();
    let Error::Rejected {
        status, code, fields, ..
    } = &e
    else {
        panic!("expected a rejection, got {e:?}");
    };
    assert_eq!(*status, 422);
    assert_eq!(code, "validation_failed");
    let paths: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    assert!(paths.contains(&"repo") && paths.contains(&"command"), "{paths:?}");
    // The one-line message names every refused field.
    let line = e.to_string();
    assert!(line.contains("repo") && line.contains("command"), "{line}");
}

#[tokio::test]
async fn a_server_that_is_gone_is_unavailable_and_transient() {
    let env = env().await;
    let url = env.server.url();
    env.server.shutdown().await.unwrap();
    let e = env.client.get_task(TaskId::new()).await.unwrap_err();
    assert!(matches!(&e, Error::Unavailable { status: None, .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(e.to_string().contains(&url), "{e}");
}

/// A server that accepts the connection and then says nothing (stopped, or stuck) is not
/// one that cannot be reached: the error says which limit the call reached, the ordinary one
/// or, for a long poll, that plus its wait. Either way the call may be tried again.
#[tokio::test]
async fn a_server_that_does_not_answer_in_time_says_so() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accepted connections are kept open, unanswered, until the test ends.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let client =
        Client::with_config(ClientConfig::new(&url).call_timeout(Duration::from_millis(300))).unwrap();
    let e = client.get_task(TaskId::new()).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "the agentpool server at {url} did not answer within 0.3 s (it is overloaded or \
             stopped, or the network to it drops packets)"
        )
    );
    let worker = agentpool_core::WorkerId::generate("w");
    let e = client
        .claim(&worker, 1, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(e.to_string().contains("did not answer within 1.3 s"), "{e}");
}

#[test]
fn a_base_url_that_is_not_http_is_a_configuration_error() {
    let e = Client::new("ftp://example.com", None).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    // Credentials in the URL are refused, and not repeated.
    for url in [
        "https://ops:hunter2@agentpool.example",
        "ftp://hunter2@example.com",
    ] {
        let e = Client::new(url, None).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("--token"), "{e}");
    }
    let mut cfg = ClientConfig::new("https://example.com");
    cfg.ca_pem = Some(b"not a certificate".to_vec());
    assert!(matches!(Client::with_config(cfg), Err(Error::Config(_))));
    // The API's own path is not part of the server's address.
    let e = Client::new("https://agentpool.example/v1/", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "server URL \"https://agentpool.example/v1\" ends in /v1: give the server's address \
         without the API path (https://agentpool.example)"
    );
    assert!(Client::new("https://example.com/agentpool", None).is_ok());
}

/// An HTTP server on a free port that answers every request with `status`, `content_type` and
/// `body`, as a proxy or another service would; its URL.
async fn foreign_server(status: &'static str, content_type: &'static str, body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    url
}

/// An error answer that is not an agentpool server's says so, and whose it might be, without
/// repeating an HTML page; a proxy's line of plain text is kept. Its status still decides
/// what kind of error it is.
#[tokio::test]
async fn an_answer_from_something_else_than_an_agentpool_server_says_so() {
    // What a request to `url` fails with.
    let error = async |url: &str| {
        Client::new(url, None)
            .unwrap()
            .get_task(TaskId::new())
            .await
            .unwrap_err()
    };
    let page = "<!DOCTYPE html><html><h1>Not here</h1></html>";
    let html = foreign_server("404 Not Found", "text/html", page).await;
    let e = error(&html).await;
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "404 Not Found from {html} (not an agentpool server's answer: a proxy in front of it, \
             or --server names another service)"
        )
    );
    let said = "\nupstream connect error\nmore\n";
    let proxy = foreign_server("502 Bad Gateway", "text/plain", said).await;
    let e = error(&proxy).await;
    assert!(e.is_transient(), "{e:?}");
    assert!(
        e.to_string().contains(&format!(
            "502 Bad Gateway from {proxy}: upstream connect error (not an agentpool"
        )),
        "{e}"
    );
}

/// A name reaches the server as the one name it is, whatever its characters: unencoded,
/// `web#2` would be `web` (the rest a fragment), `web?x` would be `web` with a query, `a/b`
/// two segments and `..` a step up, so a mistyped name could read or delete another.
#[tokio::test]
async fn a_name_is_one_path_segment_whatever_it_holds() {
    let env = env().await;
    let c = &env.client;
    let web: agentpool_core::project::ProjectSpec =
        serde_json::from_value(serde_json::json!({"name": "web", "repo": "https://example.com/r.git"}))
            .unwrap();
    c.put_project(&web).await.unwrap();
    for name in ["web#2", "web?x=1", "web/", "web/builds", "..", ".", "web%23"] {
        let e = c.delete_project(name).await.unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(_) | Error::Rejected { .. }),
            "{name}: {e:?}"
        );
        assert!(c.get_project(name).await.is_err(), "{name}");
        assert!(c.get_profile(name).await.is_err(), "{name}");
        assert!(c.revoke_token(name).await.is_err(), "{name}");
    }
    assert_eq!(
        c.get_project("web").await.unwrap().spec.name,
        "web",
        "still there"
    );
    assert_eq!(c.list_projects().await.unwrap().len(), 1);
    // A name with a dot (encoded too) is the name it was given.
    let dotted = agentpool_core::project::ProjectSpec {
        name: "web.v2".into(),
        ..web
    };
    c.put_project(&dotted).await.unwrap();
    assert_eq!(c.get_project("web.v2").await.unwrap().spec.name, "web.v2");
    c.delete_project("web.v2").await.unwrap();
    assert_eq!(c.list_projects().await.unwrap().len(), 1);
}
