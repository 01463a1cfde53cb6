//! The projects page's tokens section: admins see each token's role, projects, expiry and last
//! use (never a value) and revoke one with a CSRF-guarded form; submitters see none of it.

use agentpool_server::Role;
use agentpool_server::auth::{TokenLimits, create_limited_token};
use agentpool_testkit::db::Backend;
use axum::http::StatusCode;

use super::{get, post_expecting, session};
use crate::both_backends;
use crate::support::router_app;

both_backends!(admins_see_tokens_and_revoke_one_from_the_projects_page);

async fn admins_see_tokens_and_revoke_one_from_the_projects_page(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let store = app.store.as_ref();
    store
        .put_project(agentpool_core::project::ProjectSpec {
            name: "web".into(),
            repo: "https://example.com/web.git".into(),
            ..Default::default()
        })
        .await
        .expect("project");
    let limits = TokenLimits {
        projects: vec!["web".into()],
        expires_at: Some(store.time() + chrono::Duration::days(30)),
    };
    let web_ci = create_limited_token(store, Role::Submitter, "web-ci", limits)
        .await
        .expect("token");

    let admin = session(&app.tokens.admin);
    let page = get(&app, "/projects", Some(&admin)).await;
    assert_eq!(page.status, StatusCode::OK);
    let row_at = page
        .text
        .find(&format!(r#"<tr id="token-{}">"#, web_ci.id))
        .expect("web-ci's row");
    let row = &page.text[row_at..row_at + page.text[row_at..].find("</tr>").expect("row end")];
    assert!(
        row.contains("<th scope=\"row\">web-ci</th><td>submitter</td><td>web</td>"),
        "{row}"
    );
    assert!(row.contains("in 29 d") || row.contains("in 30 d"), "{row}");
    assert!(row.contains("<td>never</td>"), "never used: {row}");
    assert!(
        row.contains(&format!(r#"action="/tokens/{}/revoke""#, web_ci.id)),
        "{row}"
    );
    for value in [&web_ci.plaintext, &app.tokens.admin, &app.tokens.submitter] {
        assert!(!page.text.contains(value.as_str()), "a token's value on the page");
    }
    // The admin's own token: every project, no expiry. A submitter sees no tokens at all.
    assert!(
        page.text
            .contains(">admin</th><td>admin</td><td>all</td><td>never</td>")
    );
    let sub = get(&app, "/projects", Some(&session(&app.tokens.submitter))).await;
    assert!(!sub.text.contains("tokens-h"), "{}", sub.text);

    // Revoke: a submitter may not; an admin may, with the page's CSRF token.
    let uri = format!("/tokens/{}/revoke", web_ci.id);
    let sub_csrf = sub.csrf();
    post_expecting(
        &app,
        &uri,
        &session(&app.tokens.submitter),
        &format!("csrf={sub_csrf}"),
        StatusCode::FORBIDDEN,
    )
    .await;
    post_expecting(&app, &uri, &admin, "csrf=wrong", StatusCode::FORBIDDEN).await;
    let listed = |id: String| {
        let store = app.store.clone();
        async move {
            let all = store.list_tokens().await.expect("list");
            all.into_iter().find(|t| t.id == id).expect("token").revoked
        }
    };
    assert!(!listed(web_ci.id.clone()).await);
    let r = post_expecting(
        &app,
        &uri,
        &admin,
        &format!("csrf={}", page.csrf()),
        StatusCode::SEE_OTHER,
    )
    .await;
    assert_eq!(r.location(), "/projects#tokens-h");
    assert!(listed(web_ci.id.clone()).await, "revoked");
    let page = get(&app, "/projects", Some(&admin)).await;
    assert!(
        !page
            .text
            .contains(&format!(r#"action="/tokens/{}/revoke""#, web_ci.id))
    );
    post_expecting(
        &app,
        "/tokens/nope/revoke",
        &admin,
        &format!("csrf={}", page.csrf()),
        StatusCode::NOT_FOUND,
    )
    .await;
}
