//! The destinations page (`/app/destinations`): the user's destinations with their health,
//! a form to add one by Apprise-style URL, and a remove button for each. Adding and removing
//! call the REST API's handlers, so the checks (URL rules, private networks, verification)
//! are exactly the API's, and the user avatar stays the only writer.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{Nav, Session, csrf_input, error_line, esc, html, page, see_other, session};
use crate::AppState;
use crate::destinations::{self as api, NewDestinationBody};

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => esc(s),
        Value::Null => String::new(),
        v => esc(&v.to_string()),
    }
}

fn render(s: &Session, list: &[Value], notice: &str, name: &str, url: &str) -> String {
    let rows: String = list
        .iter()
        .map(|d| {
            let verified = if d["verified"].as_bool().unwrap_or(true) {
                "verified"
            } else {
                "waiting for verification"
            };
            let health = d["health"]["state"]
                .as_str()
                .or(d["health"].as_str())
                .unwrap_or("");
            format!(
                "<li class=\"dest\"><div><strong>{name}</strong> <span class=\"kind\">{kind}</span>\
                 <div class=\"addr\">{addr}</div><div class=\"hint\">{verified}{health}{pending}</div></div>\
                 <form method=\"post\" action=\"/app/destinations/{id}/delete\">{csrf}\
                 <button type=\"submit\" class=\"danger\" aria-label=\"Remove {name}\">Remove</button></form></li>",
                name = text(&d["name"]),
                kind = text(&d["kind"]),
                addr = text(&d["address"]),
                health = if health.is_empty() {
                    String::new()
                } else {
                    format!(" · {}", esc(health))
                },
                pending = match d["pending"].as_i64() {
                    Some(n) if n > 0 => format!(" · {n} pending"),
                    _ => String::new(),
                },
                id = text(&d["id"]),
                csrf = csrf_input(&s.csrf),
            )
        })
        .collect();
    let list_html = if list.is_empty() {
        "<p class=\"empty\">No destinations yet: notifications reach you in this inbox and its live stream.</p>".to_owned()
    } else {
        format!("<ul class=\"dests\" id=\"destinations\">{rows}</ul>")
    };
    page(
        s,
        Nav::Destinations,
        "Destinations",
        &format!(
            "<h1>Destinations</h1>{notice}{list_html}\
             <h2>Add a destination</h2>\
             <form method=\"post\" action=\"/app/destinations\" class=\"stack\">{}\
             <label for=\"dest-name\">Name</label>\
             <input id=\"dest-name\" name=\"name\" required maxlength=\"100\" value=\"{}\">\
             <label for=\"dest-url\">URL</label>\
             <input id=\"dest-url\" name=\"url\" required aria-describedby=\"dest-url-hint\" value=\"{}\" \
             placeholder=\"json://hooks.example.org/tidings\" autocapitalize=\"off\" spellcheck=\"false\">\
             <p class=\"hint\" id=\"dest-url-hint\">An Apprise-style URL: <code>mailto://you@example.org</code>, \
             <code>json://host/path</code>, <code>jsons://host/path</code>, <code>ntfy://host/topic</code>, \
             <code>slack://…</code>, <code>discord://…</code>, <code>xmpp://you@example.org</code>, \
             <code>twilio://…</code>, <code>matrixs://…</code>.</p>\
             <button type=\"submit\">Add destination</button></form>",
            csrf_input(&s.csrf),
            esc(name),
            esc(url),
        ),
    )
}

async fn current(state: &AppState, s: &Session) -> Result<Vec<Value>, Response> {
    match api::list(State(state.clone()), s.authed()).await {
        Ok(Json(v)) => Ok(v["destinations"].as_array().cloned().unwrap_or_default()),
        Err(e) => Err(e.into_response()),
    }
}

/// `GET /app/destinations`.
pub async fn page_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(s) = session(&state, &headers) else {
        return see_other("/login");
    };
    match current(&state, &s).await {
        Ok(list) => html(StatusCode::OK, render(&s, &list, "", "", "")),
        Err(r) => r,
    }
}

/// `POST /app/destinations`: adds one by URL; shows a webhook's signing secret once.
pub async fn add(State(state): State<AppState>, req: Request) -> Response {
    let (s, form) = match super::session_form(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let name = form.get("name").map(|v| v.trim()).unwrap_or("").to_owned();
    let url = form.get("url").map(|v| v.trim()).unwrap_or("").to_owned();
    let body = NewDestinationBody {
        name: name.clone(),
        url: Some(url.clone()),
        config: None,
        options: Default::default(),
    };
    let (status, notice, keep) =
        match api::create(State(state.clone()), s.authed(), Ok(Json(body))).await {
            Ok((_, Json(v))) => {
                let mut n = format!(
                    "<p class=\"ok\" role=\"status\">Added {}.</p>",
                    text(&v["name"])
                );
                if let Some(secret) = v["secret"].as_str() {
                    n.push_str(&format!(
                    "<p class=\"secret\">Its signing secret, shown only now: <code>{}</code></p>",
                    esc(secret)
                ));
                }
                if v.get("verification").is_some() {
                    n.push_str(&format!(
                    "<p class=\"hint\">A verification code was sent to {}; enter it with the API \
                     (<code>POST /api/v1/destinations/{{id}}/verify</code>).</p>",
                    text(&v["address"])
                ));
                }
                (StatusCode::CREATED, n, false)
            }
            Err(e) => (e.status, error_line(&e), true),
        };
    match current(&state, &s).await {
        Ok(list) => {
            let (n, u) = if keep {
                (name.as_str(), url.as_str())
            } else {
                ("", "")
            };
            html(status, render(&s, &list, &notice, n, u))
        }
        Err(r) => r,
    }
}

/// `POST /app/destinations/{id}/delete`.
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (s, _) = match super::session_form(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match api::remove(State(state.clone()), s.authed(), Path(id)).await {
        Ok(_) => see_other("/app/destinations"),
        Err(e) => match current(&state, &s).await {
            Ok(list) => html(e.status, render(&s, &list, &error_line(&e), "", "")),
            Err(r) => r,
        },
    }
}
