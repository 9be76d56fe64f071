//! The settings page (`/settings`): the user's API tokens. A new token's secret is shown
//! once, on the page that answers its creation; the list shows labels and dates only.
//! Tokens belong to the directory, which the REST API's token routes use too.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Nav, Session, csrf_input, error_line, esc, html, iso_time, page, see_other, session};
use crate::AppState;
use crate::error::ApiError;

/// Longest token label.
const MAX_LABEL: usize = 100;

fn render(state: &AppState, s: &Session, notice: &str) -> String {
    let tokens = state.services().directory.tokens(Some(s.user.id));
    let rows: String = tokens
        .iter()
        .map(|t| {
            let label = if t.label.is_empty() {
                "(no name)".to_owned()
            } else {
                t.label.clone()
            };
            // The directory keeps milliseconds.
            let iso = iso_time(t.created_at / 1000);
            format!(
                "<li class=\"token\"><div><strong>{label}</strong> \
                 <span class=\"hint\">created <time datetime=\"{iso}\" title=\"{iso}\">{iso}</time></span></div>\
                 <form method=\"post\" action=\"/settings/tokens/{id}/revoke\">{csrf}\
                 <button type=\"submit\" class=\"danger\" aria-label=\"Revoke {label}\">Revoke</button></form></li>",
                label = esc(&label),
                id = t.id,
                csrf = csrf_input(&s.csrf),
            )
        })
        .collect();
    let list = if tokens.is_empty() {
        "<p class=\"empty\">No API tokens.</p>".to_owned()
    } else {
        format!("<ul class=\"tokens\" id=\"tokens\">{rows}</ul>")
    };
    page(
        s,
        Nav::Settings,
        "Settings",
        &format!(
            "<h1>Settings</h1><h2>API tokens</h2>{notice}{list}\
             <h3>Create a token</h3>\
             <form method=\"post\" action=\"/settings/tokens\" class=\"stack\">{}\
             <label for=\"token-label\">Name</label>\
             <input id=\"token-label\" name=\"label\" required maxlength=\"{MAX_LABEL}\" \
             aria-describedby=\"token-hint\">\
             <p class=\"hint\" id=\"token-hint\">For example the machine or script that will publish with it.</p>\
             <button type=\"submit\">Create token</button></form>",
            csrf_input(&s.csrf)
        ),
    )
}

/// `GET /settings`.
pub async fn page_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(s) = session(&state, &headers) else {
        return see_other("/login");
    };
    html(StatusCode::OK, render(&state, &s, ""))
}

/// `POST /settings/tokens`: creates a token and shows its secret once.
pub async fn create_token(State(state): State<AppState>, req: Request) -> Response {
    let (s, form) = match super::session_form(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let label = form.get("label").map(|v| v.trim()).unwrap_or("").to_owned();
    if label.is_empty() || label.chars().count() > MAX_LABEL || label.chars().any(char::is_control)
    {
        let e = ApiError::bad_request(
            "invalid",
            format!("a token name is 1-{MAX_LABEL} characters"),
        );
        return html(e.status, render(&state, &s, &error_line(&e)));
    }
    match state
        .services()
        .directory
        .create_token(s.user.id, &label)
        .await
    {
        Ok((_, secret)) => {
            let notice = format!(
                "<div class=\"secret\" role=\"status\"><p>New token <strong>{}</strong>. \
                 Copy it now: it is not shown again.</p><p><code id=\"new-token\">{}</code></p></div>",
                esc(&label),
                esc(&secret)
            );
            html(StatusCode::CREATED, render(&state, &s, &notice))
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `POST /settings/tokens/{id}/revoke`.
pub async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (s, _) = match super::session_form(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match crate::api::revoke_token(State(state.clone()), s.authed(), Path(id)).await {
        Ok(_) => see_other("/settings"),
        Err(e) => html(e.status, render(&state, &s, &error_line(&e))),
    }
}
