//! The sources page (`/app/sources`): the user's subscriptions with their filters and, for
//! feeds, pages and mailboxes, their health; a form to add a feed or a page watch with a
//! keyword filter and a preview of which current items would match; a form to create a
//! topic, with the `curl` line that publishes to it; the user's mail addresses.
//!
//! Subscribing, changing a filter (re-subscribing to the same source replaces it) and
//! removing call the REST API's handlers, so the checks (feed discovery, private networks,
//! topic ownership) are exactly the API's. The preview fetches the URL once through the same
//! SSRF-safe fetcher and parser as polling, bounded by the discovery timeout, and stores
//! nothing. There is no pause per subscription (pausing is per user, for now).

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tidings_core::Filter;
use tidings_routing::discover::DISCOVERY_TIMEOUT;
use tidings_routing::source::web::{self, WebKind, WebSource};
use tidings_routing::user::SourceSpec;
use tidings_sources::feed::Outcome;

use super::{Nav, Session, csrf_input, error_line, esc, html, iso_time, page, see_other, session};
use crate::AppState;
use crate::api::{self, NewSubscription};
use crate::error::ApiError;

/// Most items a preview lists.
const PREVIEW_ITEMS: usize = 50;

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => esc(s),
        Value::Null => String::new(),
        v => esc(&v.to_string()),
    }
}

/// Comma-separated keywords from a form field.
fn keywords(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

fn joined(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// What the add form held, to show it again after a preview or an error.
#[derive(Default, Clone)]
struct AddForm {
    url: String,
    selector: String,
    include: String,
    exclude: String,
}

impl AddForm {
    fn from(form: &std::collections::HashMap<String, String>) -> AddForm {
        let f = |k: &str| form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
        AddForm {
            url: f("url"),
            selector: f("selector"),
            include: f("include"),
            exclude: f("exclude"),
        }
    }

    fn filter(&self) -> Filter {
        Filter {
            include: keywords(&self.include),
            exclude: keywords(&self.exclude),
            min_priority: None,
        }
    }

    fn spec(&self) -> SourceSpec {
        if self.selector.is_empty() {
            SourceSpec::Feed {
                url: self.url.clone(),
                backfill: 0,
            }
        } else {
            SourceSpec::Page {
                url: self.url.clone(),
                selector: self.selector.clone(),
                backfill: 0,
            }
        }
    }
}

/// What the subscription follows, as text for the list.
fn what(source: &Value) -> String {
    match source["kind"].as_str().unwrap_or("") {
        "topic" => format!("<code>{}</code>", text(&source["topic"])),
        "feed" => format!("<span class=\"addr\">{}</span>", text(&source["url"])),
        "page" => format!(
            "<span class=\"addr\">{}</span> <span class=\"hint\">elements <code>{}</code></span>",
            text(&source["url"]),
            text(&source["selector"])
        ),
        "imap" => format!(
            "<span class=\"addr\">{}@{} · {}</span>",
            text(&source["username"]),
            text(&source["host"]),
            text(&source["folder"])
        ),
        _ => text(&source["kind"]),
    }
}

/// The health line of a polled source (times are ms).
fn health(status: &Value) -> String {
    if !status.is_object() {
        return String::new();
    }
    let when = |v: &Value| {
        v.as_i64()
            .map(|ms| iso_time(ms / 1000))
            .unwrap_or_else(|| "never".into())
    };
    let mut out = format!(
        "<div class=\"hint health\">Status: <strong>{}</strong> · last fetch {} · next poll {}",
        text(&status["status"]),
        when(&status["last_fetch"]),
        status["next_poll"]
            .as_i64()
            .map(|ms| iso_time(ms / 1000))
            .unwrap_or_else(|| "not scheduled".into()),
    );
    if let Some(e) = status["last_error"].as_str().filter(|e| !e.is_empty()) {
        out.push_str(&format!(
            " · last error: <span class=\"error\">{}</span>",
            esc(e)
        ));
    }
    out.push_str("</div>");
    out
}

fn sub_row(s: &Session, sub: &Value) -> String {
    let id = text(&sub["id"]);
    let kind = text(&sub["source"]["kind"]);
    let include = joined(&sub["filter"]["include"]);
    let exclude = joined(&sub["filter"]["exclude"]);
    let filter = if include.is_empty() && exclude.is_empty() {
        "everything".to_owned()
    } else {
        let mut f = Vec::new();
        if !include.is_empty() {
            f.push(format!("with {}", esc(&include)));
        }
        if !exclude.is_empty() {
            f.push(format!("without {}", esc(&exclude)));
        }
        f.join("; ")
    };
    // A mailbox's password is not kept with the subscription: its filter is changed by
    // subscribing again with the password (API or IM).
    let edit = if sub["source"]["kind"] == "imap" {
        String::new()
    } else {
        format!(
            "<form method=\"post\" action=\"/app/sources/{id}/filter\" class=\"inline filter\">{csrf}\
             <label for=\"inc-{id}\">With</label>\
             <input id=\"inc-{id}\" name=\"include\" value=\"{inc}\" placeholder=\"any\">\
             <label for=\"exc-{id}\">Without</label>\
             <input id=\"exc-{id}\" name=\"exclude\" value=\"{exc}\">\
             <button type=\"submit\">Change filter</button></form>",
            csrf = csrf_input(&s.csrf),
            inc = esc(&include),
            exc = esc(&exclude),
        )
    };
    format!(
        "<li class=\"dest sub\"><div><span class=\"kind\">{kind}</span> {what}\
         <div class=\"hint\">Filter: {filter}</div>{health}{edit}</div>\
         <form method=\"post\" action=\"/app/sources/{id}/delete\">{csrf}\
         <button type=\"submit\" class=\"danger\" aria-label=\"Remove {kind} subscription {id}\">Remove</button></form></li>",
        what = what(&sub["source"]),
        health = health(&sub["status"]),
        csrf = csrf_input(&s.csrf),
    )
}

struct View<'a> {
    notice: String,
    add: AddForm,
    preview: String,
    topic: &'a str,
}

fn render(state: &AppState, s: &Session, subs: &[Value], v: View) -> String {
    let rows: String = subs.iter().map(|sub| sub_row(s, sub)).collect();
    let list_html = if subs.is_empty() {
        "<p class=\"empty\">No subscriptions yet.</p>".to_owned()
    } else {
        format!("<ul class=\"dests\" id=\"sources\">{rows}</ul>")
    };
    let base = state.cfg().base_url.trim_end_matches('/').to_owned();
    let owned = state.services().directory.owned_topics(s.user.id);
    let topics: String = owned
        .iter()
        .map(|t| {
            format!(
                "<li><code>{}</code><pre class=\"curl\"><code>curl -H \"Authorization: Bearer &lt;your token&gt;\" -d \"message\" {}/{}</code></pre></li>",
                esc(&t.name),
                esc(&base),
                esc(&t.name)
            )
        })
        .collect();
    let topics = if owned.is_empty() {
        "<p class=\"empty\">You own no topics yet.</p>".to_owned()
    } else {
        format!(
            "<ul class=\"topics\" id=\"topics\">{topics}</ul>\
             <p class=\"hint\">Create a token for <code>&lt;your token&gt;</code> on the Settings page.</p>"
        )
    };
    let mail = match &state.services().outbox.config().mail_domain {
        Some(d) => format!(
            "<p id=\"mail\">Mail to <code>{n}@{d}</code> becomes a notification; \
             <code>{n}+label@{d}</code> too, with <code>label</code> as its source.</p>",
            n = esc(&s.user.name),
            d = esc(d)
        ),
        None => "<p id=\"mail\" class=\"hint\">Mail in is not enabled on this server.</p>".into(),
    };
    let a = &v.add;
    page(
        s,
        Nav::Sources,
        "Sources",
        &format!(
            "<h1>Sources</h1>{notice}{list_html}\
             <h2>Add a feed or a page</h2>\
             <form method=\"post\" action=\"/app/sources\" class=\"stack\">{csrf}\
             <label for=\"src-url\">URL</label>\
             <input id=\"src-url\" name=\"url\" required value=\"{url}\" placeholder=\"https://example.org/feed.xml\" \
             autocapitalize=\"off\" spellcheck=\"false\">\
             <label for=\"src-selector\">CSS selector (only to watch a page)</label>\
             <input id=\"src-selector\" name=\"selector\" value=\"{sel}\" aria-describedby=\"src-selector-hint\" \
             autocapitalize=\"off\" spellcheck=\"false\">\
             <p class=\"hint\" id=\"src-selector-hint\">Empty for a feed (or a page that links to one); \
             for a page, the elements to watch, like <code>.news li</code>.</p>\
             <label for=\"src-include\">Only items with (comma-separated keywords)</label>\
             <input id=\"src-include\" name=\"include\" value=\"{inc}\">\
             <label for=\"src-exclude\">Not items with</label>\
             <input id=\"src-exclude\" name=\"exclude\" value=\"{exc}\">\
             <div class=\"buttons\"><button type=\"submit\" name=\"action\" value=\"preview\" class=\"secondary\">Preview</button> \
             <button type=\"submit\" name=\"action\" value=\"subscribe\">Subscribe</button></div></form>{preview}\
             <h2>Topics</h2>{topics}\
             <form method=\"post\" action=\"/app/sources/topic\" class=\"stack\">{csrf}\
             <label for=\"topic-name\">New topic</label>\
             <input id=\"topic-name\" name=\"topic\" required maxlength=\"64\" value=\"{topic}\" \
             autocapitalize=\"off\" spellcheck=\"false\">\
             <button type=\"submit\">Create topic</button></form>\
             <h2>Mail</h2>{mail}",
            notice = v.notice,
            csrf = csrf_input(&s.csrf),
            url = esc(&a.url),
            sel = esc(&a.selector),
            inc = esc(&a.include),
            exc = esc(&a.exclude),
            preview = v.preview,
            topic = esc(v.topic),
        ),
    )
}

/// The subscriptions, each with its status (`GET /api/v1/subscriptions/{id}`) when polled.
async fn current(state: &AppState, s: &Session) -> Result<Vec<Value>, Response> {
    let list = match api::list_subscriptions(State(state.clone()), s.authed()).await {
        Ok(Json(v)) => v["subscriptions"].as_array().cloned().unwrap_or_default(),
        Err(e) => return Err(e.into_response()),
    };
    let mut out = Vec::with_capacity(list.len());
    for sub in list {
        if sub["source"]["kind"] == "topic" {
            out.push(sub);
            continue;
        }
        let id = sub["id"].as_str().unwrap_or("").to_owned();
        match api::get_subscription(State(state.clone()), s.authed(), Path(id)).await {
            Ok(Json(v)) => out.push(v),
            // A source avatar that does not answer in time: list it without health.
            Err(_) => out.push(sub),
        }
    }
    Ok(out)
}

async fn respond(state: &AppState, s: &Session, status: StatusCode, v: View<'_>) -> Response {
    match current(state, s).await {
        Ok(list) => html(status, render(state, s, &list, v)),
        Err(r) => r,
    }
}

fn ok_line(msg: &str) -> String {
    format!("<p class=\"ok\" role=\"status\">{}</p>", esc(msg))
}

/// `GET /app/sources`.
pub async fn page_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(s) = session(&state, &headers) else {
        return see_other("/login");
    };
    let v = View {
        notice: String::new(),
        add: AddForm::default(),
        preview: String::new(),
        topic: "",
    };
    respond(&state, &s, StatusCode::OK, v).await
}

async fn subscribe(
    state: &AppState,
    s: &Session,
    source: SourceSpec,
    filter: Filter,
) -> Result<Value, ApiError> {
    let body = NewSubscription { source, filter };
    api::create_subscription(State(state.clone()), s.authed(), Ok(Json(body)))
        .await
        .map(|(_, Json(v))| v)
}

/// `POST /app/sources`: subscribes to a feed or page (`action=subscribe`), or previews it.
pub async fn add(State(state): State<AppState>, req: Request) -> Response {
    let (s, form) = match super::session_form(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let add = AddForm::from(&form);
    if form.get("action").map(String::as_str) == Some("preview") {
        let (status, preview) = match preview(&state, &add).await {
            Ok(p) => (StatusCode::OK, p),
            Err(e) => (e.status, error_line(&e)),
        };
        let v = View {
            notice: String::new(),
            add,
            preview,
            topic: "",
        };
        return respond(&state, &s, status, v).await;
    }
    let (status, notice, add) = match subscribe(&state, &s, add.spec(), add.filter()).await {
        Ok(v) => {
            let url = v["source"]["url"].as_str().unwrap_or("");
            (
                StatusCode::CREATED,
                ok_line(&format!("Subscribed to {url}.")),
                AddForm::default(),
            )
        }
        Err(e) => (e.status, error_line(&e), add),
    };
    let v = View {
        notice,
        add,
        preview: String::new(),
        topic: "",
    };
    respond(&state, &s, status, v).await
}

/// Fetches the URL once and lists its current items, marking those the filter lets through.
async fn preview(state: &AppState, add: &AddForm) -> Result<String, ApiError> {
    let filter = add.filter();
    filter.validate()?;
    let mut spec = add.spec();
    let source_id = spec.source_id()?;
    match tokio::time::timeout(DISCOVERY_TIMEOUT, fetch_items(state, &mut spec)).await {
        Ok(r) => {
            let drafts = r?;
            let now = tidings_store::now_ms();
            let total = drafts.len();
            let mut matching = 0;
            let rows: String = drafts
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let n = web::item_notification(&source_id, d, now);
                    let hit = filter.matches(&n);
                    matching += usize::from(hit);
                    if i >= PREVIEW_ITEMS {
                        return String::new();
                    }
                    let (class, mark) = if hit {
                        ("match", "would notify")
                    } else {
                        ("nomatch", "filtered out")
                    };
                    let title = d.title.as_deref().unwrap_or("");
                    let link = d
                        .link
                        .as_deref()
                        .map(|l| format!(" <span class=\"addr\">{}</span>", esc(l)))
                        .unwrap_or_default();
                    format!(
                        "<li class=\"{class}\"><span class=\"mark\">{mark}</span> <strong>{}</strong> {}{link}</li>",
                        esc(title),
                        esc(&truncate(&n.message, 200)),
                    )
                })
                .collect();
            let url = match &spec {
                SourceSpec::Feed { url, .. } | SourceSpec::Page { url, .. } => url.as_str(),
                _ => "",
            };
            Ok(format!(
                "<section id=\"preview\" aria-labelledby=\"preview-h\"><h2 id=\"preview-h\">Preview</h2>\
                 <p role=\"status\">{matching} of {total} current items of <span class=\"addr\">{}</span> would notify you{}.</p>\
                 <ul class=\"preview\">{rows}</ul></section>",
                esc(url),
                if total > PREVIEW_ITEMS {
                    format!(" (the first {PREVIEW_ITEMS} are listed)")
                } else {
                    String::new()
                },
            ))
        }
        Err(_) => Err(ApiError::bad_request(
            "fetch_failed",
            format!(
                "{} did not answer within {} s",
                add.url,
                DISCOVERY_TIMEOUT.as_secs()
            ),
        )),
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The items of the feed (after discovery) or page, as polling parses them.
async fn fetch_items(state: &AppState, spec: &mut SourceSpec) -> Result<Vec<web::Draft>, ApiError> {
    match spec {
        SourceSpec::Feed { url, .. } => *url = crate::discover::feed_url(state, url).await?,
        SourceSpec::Page { url, selector, .. } => {
            tidings_sources::page::validate_selector(selector)
                .map_err(|e| ApiError::bad_request("invalid_selector", e.to_string()))?;
            let checked = state
                .services()
                .fetcher
                .check_url(url)
                .await
                .map_err(crate::discover::refused)?;
            *url = checked.to_string();
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_source",
                "only feeds and pages",
            ));
        }
    }
    let src = WebSource::from_spec(spec)
        .ok_or_else(|| ApiError::bad_request("invalid_source", "only feeds and pages"))?;
    let kind: WebKind = src.kind.clone();
    let fetched = web::fetch_and_parse(&state.services().fetcher, kind, src.request()).await;
    match fetched.outcome {
        Outcome::Failed { status, reason, .. } => Err(ApiError::bad_request(
            "fetch_failed",
            match status {
                Some(c) => format!("the URL answered HTTP {c} {reason}"),
                None => format!("cannot read the URL: {reason}"),
            },
        )),
        Outcome::Gone => Err(ApiError::bad_request(
            "fetch_failed",
            "the URL is gone (HTTP 410)",
        )),
        _ => Ok(fetched.drafts),
    }
}

/// `POST /app/sources/topic`: claims a topic and subscribes to it.
pub async fn topic(State(state): State<AppState>, req: Request) -> Response {
    let (s, form) = match super::session_form(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let name = form.get("topic").map(|v| v.trim()).unwrap_or("").to_owned();
    let spec = SourceSpec::Topic {
        topic: name.clone(),
    };
    let (status, notice, keep) = match subscribe(&state, &s, spec, Filter::default()).await {
        Ok(_) => (
            StatusCode::CREATED,
            ok_line(&format!(
                "Topic {name} is yours, and you are subscribed to it."
            )),
            "",
        ),
        Err(e) => (e.status, error_line(&e), name.as_str()),
    };
    let v = View {
        notice,
        add: AddForm::default(),
        preview: String::new(),
        topic: keep,
    };
    respond(&state, &s, status, v).await
}

/// `POST /app/sources/{id}/filter`: subscribes again to the same source with a new filter.
pub async fn filter(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (s, form) = match super::session_form(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let result = async {
        let Json(sub) = api::get_subscription(State(state.clone()), s.authed(), Path(id)).await?;
        let source: SourceSpec = serde_json::from_value(sub["source"].clone())
            .map_err(|e| ApiError::bad_request("invalid_source", e.to_string()))?;
        if matches!(source, SourceSpec::Imap { .. }) {
            return Err(ApiError::bad_request(
                "invalid_source",
                "a mailbox's filter changes by subscribing again with its password",
            ));
        }
        let old: Filter = serde_json::from_value(sub["filter"].clone()).unwrap_or_default();
        let f = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        let filter = Filter {
            include: keywords(f("include")),
            exclude: keywords(f("exclude")),
            min_priority: old.min_priority,
        };
        subscribe(&state, &s, source, filter).await
    }
    .await;
    match result {
        Ok(_) => see_other("/app/sources"),
        Err(e) => {
            let v = View {
                notice: error_line(&e),
                add: AddForm::default(),
                preview: String::new(),
                topic: "",
            };
            respond(&state, &s, e.status, v).await
        }
    }
}

/// `POST /app/sources/{id}/delete`: unsubscribes.
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (s, _) = match super::session_form(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match api::delete_subscription(State(state.clone()), s.authed(), Path(id)).await {
        Ok(_) => see_other("/app/sources"),
        Err(e) => {
            let v = View {
                notice: error_line(&e),
                add: AddForm::default(),
                preview: String::new(),
                topic: "",
            };
            respond(&state, &s, e.status, v).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keywords_and_health() {
        assert_eq!(
            keywords(" rust, ,release notes,"),
            vec!["rust", "release notes"]
        );
        assert_eq!(health(&Value::Null), "");
        let h = health(
            &json!({"status": "error", "last_fetch": null, "next_poll": 0,
            "last_error": "<b>boom</b>"}),
        );
        assert!(
            h.contains("last fetch never") && h.contains("1970-01-01T00:00:00Z"),
            "{h}"
        );
        assert!(h.contains("&lt;b&gt;boom") && !h.contains("<b>"), "{h}");
    }
}
