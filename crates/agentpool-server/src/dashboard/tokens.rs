//! The tokens section of the projects page, for admins: each token's role, the projects it is
//! limited to, its expiry and last use, and a form to revoke it. Never a value (only its
//! hash is stored).

use std::fmt::Write;

use agentpool_core::Timestamp;
use agentpool_core::protocol::TokenInfo;
use axum::extract::State;
use axum::response::Response;

use super::Dash;
use super::auth::{Action, Session, redirect};
use super::error::{DashError, DashResult};
use super::html::{self, Url, attr, esc};
use super::request::DashPath;

/// The section: valid tokens first (by name), then revoked ones.
pub(super) fn section(h: &mut String, tokens: &[TokenInfo], now: Timestamp, session: &Session) {
    h.push_str(r#"<section aria-labelledby="tokens-h"><h2 id="tokens-h">Tokens</h2>"#);
    if tokens.is_empty() {
        h.push_str(r#"<p class="empty">No tokens.</p></section>"#);
        return;
    }
    h.push_str(
        r#"<p class="hint">Values are shown once, when a token is created (<code>agentpool tokens create</code>).</p><table class="tokens"><caption class="sr-only">Tokens</caption><thead><tr><th scope="col">name</th><th scope="col">role</th><th scope="col">projects</th><th scope="col">expires</th><th scope="col">last used</th><th scope="col">created</th><th scope="col">state</th><th scope="col"><span class="sr-only">actions</span></th></tr></thead><tbody>"#,
    );
    let mut sorted: Vec<&TokenInfo> = tokens.iter().collect();
    sorted.sort_by(|a, b| (a.revoked, &a.name).cmp(&(b.revoked, &b.name)));
    for t in sorted {
        let state = if t.revoked {
            "revoked"
        } else if t.expired(now) {
            "expired"
        } else {
            "valid"
        };
        let projects = if t.projects.is_empty() {
            "all".to_string()
        } else {
            esc(&t.projects.join(", ")).to_string()
        };
        let expires = t.expires_at.map_or_else(
            || "never".to_string(),
            |at| format!("{} ({})", html::ago(at, now), html::time(at)),
        );
        let used = t
            .last_used_at
            .map_or_else(|| "never".to_string(), |at| html::ago(at, now));
        let revoke = if t.revoked {
            String::new()
        } else {
            format!(
                r#"<form method="post" action="/tokens/{id}/revoke">{csrf}<button type="submit" aria-label="Revoke token {name}" data-confirm="Revoke token {name}? Whatever uses it stops working.">Revoke</button></form>"#,
                id = Url(&t.id),
                csrf = session.csrf_field(),
                name = html::label(&t.name),
            )
        };
        let _ = write!(
            h,
            r#"<tr id="token-{id}"><th scope="row">{name}</th><td>{role}</td><td>{projects}</td><td>{expires}</td><td>{used}</td><td>{created}</td><td>{state}</td><td>{revoke}</td></tr>"#,
            id = attr(&t.id),
            name = esc(&t.name),
            role = esc(&t.role),
            created = html::ago(t.created_at, now),
        );
    }
    h.push_str("</tbody></table></section>");
}

/// `POST /tokens/{id}/revoke` (admins): as `DELETE /v1/tokens/{id}`; the token stops working
/// within the server's auth cache lifetime.
pub async fn revoke(
    State(dash): State<Dash>,
    DashPath(id): DashPath<String>,
    action: Action,
) -> DashResult<Response> {
    if !action.session.is_admin() {
        return Err(DashError::forbidden(
            "a submitter token may not revoke tokens; needs role admin",
        ));
    }
    let store = dash.app.store();
    if !store.list_tokens().await?.iter().any(|t| t.id == id) {
        return Err(DashError::not_found(format!("token {id} not found")));
    }
    store.revoke_token(&id).await?;
    tracing::info!(token = %id, by = %action.session.who(), "token revoked");
    Ok(redirect("/projects#tokens-h"))
}
