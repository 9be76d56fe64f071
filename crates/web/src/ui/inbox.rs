//! The inbox (`GET /`): the newest 50 notifications, newest first, each with its priority,
//! source, time and link, and an ack button. `/static/app.js` keeps it live: it opens
//! `/api/v1/stream` and inserts new items at the top with the same markup, built with DOM
//! text nodes (never HTML strings). Acks are a form post (`POST /app/ack/{id}`) that the
//! script turns into a request without a reload.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tidings_routing::history::{self, HistoryItem, HistoryQuery};
use tidings_store::now_ms;

use super::{Nav, Session, csrf_input, esc, html, iso_time, page, relative, see_other, session};
use crate::AppState;
use crate::error::ApiError;

/// Items on the page.
const PAGE: usize = 50;

/// Only web, mail and phone links are rendered as links: a `javascript:` or `data:` click
/// URL stays text (the edge refuses them too; this does not rely on it).
pub fn safe_link(url: &str) -> Option<&str> {
    let url = url.trim_start();
    let lower = url.to_ascii_lowercase();
    ["https://", "http://", "mailto:", "tel:"]
        .iter()
        .any(|p| lower.starts_with(p))
        .then_some(url)
}

/// What to show as an item's source: its topic, else its author, else the source id.
fn source_label(item: &HistoryItem) -> &str {
    let n = &item.notification;
    n.topic
        .as_deref()
        .or(n.author.as_deref())
        .unwrap_or(&n.source)
}

fn render_item(item: &HistoryItem, csrf: &str, now: i64) -> String {
    let n = &item.notification;
    let p = n.priority.as_number();
    let pname = n.priority.name();
    let (heading, body) = match &n.title {
        Some(t) if !t.is_empty() => (t.as_str(), Some(n.message.as_str())),
        _ => (n.message.as_str(), None),
    };
    let body = body
        .map(|b| format!("<p class=\"msg\">{}</p>", esc(b)))
        .unwrap_or_default();
    let link = n
        .click
        .as_deref()
        .and_then(safe_link)
        .map(|u| {
            format!(
                "<a class=\"click\" href=\"{}\" rel=\"noopener noreferrer nofollow\" target=\"_blank\">Open link</a>",
                esc(u)
            )
        })
        .unwrap_or_default();
    let tags = if n.tags.is_empty() {
        String::new()
    } else {
        format!(
            "<span class=\"tags\">{}</span>",
            n.tags.iter().map(|t| esc(t)).collect::<Vec<_>>().join(", ")
        )
    };
    let ack = if item.acked {
        "<span class=\"acked-label\">Acknowledged</span>".to_owned()
    } else {
        format!(
            "<form class=\"ack\" method=\"post\" action=\"/app/ack/{id}\">{}\
             <button type=\"submit\" aria-label=\"Acknowledge: {label}\">Ack</button></form>",
            csrf_input(csrf),
            id = esc(n.id.as_str()),
            // A screen reader reads the label: the start of the heading says which item.
            label = esc(&tidings_core::notification::truncate_chars(heading, 80)),
        )
    };
    let iso = iso_time(n.time);
    format!(
        "<li class=\"item p{p}{acked}\" id=\"n-{id}\" data-id=\"{id}\">\
         <div class=\"meta\"><span class=\"prio p{p}\" title=\"priority {p} of 5\">{pname}</span> \
         <span class=\"source\">{source}</span> \
         <time datetime=\"{iso}\" title=\"{iso}\">{rel}</time>{tags}</div>\
         <h2 class=\"title\">{heading}</h2>{body}<div class=\"actions\">{link}{ack}</div></li>",
        acked = if item.acked { " acked" } else { "" },
        id = esc(n.id.as_str()),
        source = esc(source_label(item)),
        rel = relative(now - n.time),
        heading = esc(heading),
    )
}

/// `GET /`: the inbox when signed in, else the sign-in page.
pub async fn page_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(s) = session(&state, &headers) else {
        return see_other("/login");
    };
    let q = HistoryQuery {
        user_id: s.user.id,
        limit: PAGE,
        ..Default::default()
    };
    let items = match history::list(&state.services().store, q).await {
        Ok((items, _)) => items,
        Err(e) => return ApiError::from(e).into_response(),
    };
    html(StatusCode::OK, render(&s, &items))
}

fn render(s: &Session, items: &[HistoryItem]) -> String {
    let now = now_ms() / 1000;
    let list: String = items.iter().map(|i| render_item(i, &s.csrf, now)).collect();
    let empty = if items.is_empty() {
        "<p class=\"empty\" id=\"empty\">Nothing yet. Publish with \
         <code>curl -H \"Authorization: Bearer $TOKEN\" -d \"Backup finished\" https://this-server/backups</code>.</p>"
    } else {
        ""
    };
    page(
        s,
        Nav::Inbox,
        "Inbox",
        &format!(
            "<div class=\"bar\"><h1>Inbox</h1>\
             <p class=\"live\" id=\"live\" role=\"status\" aria-live=\"polite\">Showing the newest {PAGE}.</p>\
             <button type=\"button\" id=\"notify\" hidden>Enable desktop notifications</button></div>\
             {empty}<ol class=\"inbox\" id=\"inbox\" aria-label=\"Notifications, newest first\">{list}</ol>"
        ),
    )
}

/// `POST /app/ack/{id}`: acks through the same path as the API; a script gets JSON, a plain
/// form post goes back to the inbox.
pub async fn ack(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let (s, _) = match super::session_form(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match crate::api::ack_notification(State(state), s.authed(), Path(id)).await {
        Ok(Json(v)) if wants_json => Json(v).into_response(),
        Ok(_) => see_other("/"),
        Err(e) if wants_json => e.into_response(),
        Err(e) => html(
            e.status,
            page(
                &s,
                Nav::Inbox,
                "Inbox",
                &format!(
                    "<h1>Inbox</h1>{}<p><a href=\"/\">Back</a></p>",
                    super::error_line(&e)
                ),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_links_are_links() {
        assert_eq!(
            safe_link("https://a.example/x"),
            Some("https://a.example/x")
        );
        assert_eq!(safe_link("HTTP://a.example"), Some("HTTP://a.example"));
        assert_eq!(safe_link("javascript:alert(1)"), None);
        assert_eq!(safe_link(" data:text/html,x"), None);
        assert_eq!(
            safe_link("mailto:a@example.org"),
            Some("mailto:a@example.org")
        );
    }
}
