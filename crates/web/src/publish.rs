//! Publishing: ntfy-compatible `PUT|POST /<topic>` (body = message; `Title`, `Priority`,
//! `Tags`, `Click`, `Actions` as headers, `X-` headers or query parameters), the GET form
//! `/<topic>/publish?message=...`, and JSON publishing at `POST /api/v1/publish` (and ntfy's
//! `POST /`). The answer is the stored message as JSON, sent once it is durable in the
//! ingest queue.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use tidings_core::ids::{source_avatar, user_avatar};
use tidings_core::notification::PublishFields;
use tidings_core::{Filter, Notification, NotificationId, TopicName};
use tidings_routing::directory::TopicAccess;
use tidings_routing::ingest::Ingest;
use tidings_routing::user::{SourceSpec, UserMsg};
use tidings_store::now_ms;

use crate::AppState;
use crate::auth::Authed;
use crate::error::{ApiError, ApiResult};

/// The first of these headers or query parameters that is present.
fn pick(headers: &HeaderMap, query: &HashMap<String, String>, names: &[&str]) -> Option<String> {
    for n in names {
        if let Some(v) = headers.get(*n) {
            return Some(String::from_utf8_lossy(v.as_bytes()).trim().to_owned());
        }
    }
    for n in names {
        if let Some(v) = query.get(&n.to_ascii_lowercase()) {
            return Some(v.clone());
        }
    }
    None
}

/// `PUT|POST /<topic>` and `GET|PUT|POST /<topic>/{publish,send,trigger}`.
pub async fn publish_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    auth: Authed,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Notification>> {
    let Query(query) = query?;
    let body = body?;
    if body.len() > state.cfg().max_message_bytes {
        return Err(too_large(state.cfg().max_message_bytes));
    }
    let mut message = std::str::from_utf8(&body)
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_message",
                "the message must be UTF-8 text (attachments are not supported)",
            )
        })?
        .trim_end_matches(['\r', '\n'])
        .to_owned();
    if message.is_empty() {
        message = pick(&headers, &query, &["message", "x-message", "m"]).unwrap_or_default();
    }
    let fields = PublishFields {
        title: pick(&headers, &query, &["title", "x-title", "t"]),
        priority: pick(&headers, &query, &["priority", "x-priority", "prio", "p"]),
        tags: pick(&headers, &query, &["tags", "x-tags", "tag", "ta"]),
        click: pick(&headers, &query, &["click", "x-click"]),
        actions: pick(&headers, &query, &["actions", "x-actions", "action"]),
    };
    let reply_url = pick(&headers, &query, &["reply-to-url", "x-reply-to-url"]);
    publish(&state, &auth, &topic, fields, message, reply_url)
        .await
        .map(Json)
}

/// The JSON form of a publish.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishJson {
    pub topic: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub priority: Option<serde_json::Value>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub click: Option<String>,
    #[serde(default)]
    pub actions: Option<serde_json::Value>,
    /// Where replies to this notification go (a signed JSON POST).
    #[serde(default)]
    pub reply_url: Option<String>,
}

/// `POST /api/v1/publish`.
pub async fn publish_json(
    State(state): State<AppState>,
    auth: Authed,
    body: Result<Json<PublishJson>, JsonRejection>,
) -> ApiResult<Json<Notification>> {
    let Json(p) = body?;
    let message = p.message.unwrap_or_default();
    if message.len() > state.cfg().max_message_bytes {
        return Err(too_large(state.cfg().max_message_bytes));
    }
    let priority = match p.priority {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_priority",
                format!("priority must be 1-5 or a name, not {other}"),
            ));
        }
    };
    let tags = match p.tags {
        Some(t) => {
            if let Some(bad) = t.iter().find(|t| t.contains(',')) {
                return Err(tidings_core::InputError::Tag(bad.clone()).into());
            }
            Some(t.join(","))
        }
        None => None,
    };
    let actions = match p.actions {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(v) => Some(v.to_string()),
    };
    let fields = PublishFields {
        title: p.title,
        priority,
        tags,
        click: p.click,
        actions,
    };
    publish(&state, &auth, &p.topic, fields, message, p.reply_url)
        .await
        .map(Json)
}

/// ntfy's `POST /` with a JSON body.
pub async fn publish_json_root(
    state: State<AppState>,
    auth: Authed,
    body: Result<Json<PublishJson>, JsonRejection>,
) -> ApiResult<Json<Notification>> {
    publish_json(state, auth, body).await
}

/// A `Reply-To-Url` must be an absolute http(s) URL of sane length. Whether its address may
/// be called is checked when a reply is sent (the publish path does no DNS).
fn check_reply_url(u: &str) -> ApiResult<()> {
    let bad = |why: &str| {
        ApiError::bad_request("invalid_reply_url", format!("Reply-To-Url {u:?}: {why}"))
    };
    if u.len() > tidings_core::notification::MAX_URL {
        return Err(bad("too long"));
    }
    let parsed = url::Url::parse(u).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("must be an http(s) URL"));
    }
    Ok(())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the message is over the limit of {limit} bytes"),
    )
}

/// Authorizes, builds and durably enqueues one publish.
async fn publish(
    state: &AppState,
    auth: &Authed,
    topic: &str,
    fields: PublishFields,
    mut message: String,
    reply_url: Option<String>,
) -> ApiResult<Notification> {
    let topic = TopicName::parse(topic)?;
    let reply_url = reply_url
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .map(|u| check_reply_url(&u).map(|()| u))
        .transpose()?;
    let user = &auth.user;
    let dir = &state.services().directory;
    if dir.topic_access(topic.as_str(), user.id) == TopicAccess::Unclaimed {
        claim_topic(state, user.id, &topic).await?;
    } else if let Some(claiming) = state.claim_in_progress(topic.as_str()) {
        // Claimed a moment ago by a concurrent request whose owner's subscription is not in
        // place yet: wait for it, or this item would reach nobody.
        drop(claiming.lock().await);
    }
    if !dir.topic_access(topic.as_str(), user.id).can_publish() {
        return Err(ApiError::forbidden(format!(
            "topic {topic:?} belongs to another user and you may not publish to it"
        )));
    }
    if message.is_empty() {
        // ntfy's default for a publish with no body.
        message = "triggered".into();
    }
    let now = now_ms();
    let n = fields.into_notification(
        NotificationId::new(now),
        now / 1000,
        topic.source_id(),
        Some(topic.as_str().to_owned()),
        message,
        Some(user.name.clone()),
    )?;
    let payload = serde_json::to_string(&Ingest::Publish {
        notification: n.clone(),
        bypass_filters: false,
        reply_url,
    })
    .map_err(|e| ApiError::internal(format!("cannot encode: {e}")))?;
    state
        .queue()
        .append(source_avatar(&topic.source_id()), payload)
        .await
        .map_err(|e| match e {
            tidings_bus::queue::Error::Closed => {
                ApiError::unavailable("the server is shutting down")
            }
            e => ApiError::unavailable(format!("the message could not be stored: {e}")),
        })?;
    metrics::counter!("tidings_published_total").increment(1);
    Ok(n)
}

/// Makes `user_id` the owner of an unowned topic and subscribes them to it, so the first
/// message already reaches them. A no-op if someone else claimed it a moment earlier: the
/// caller checks access afterwards either way.
pub(crate) async fn claim_topic(
    state: &AppState,
    user_id: i64,
    topic: &TopicName,
) -> ApiResult<()> {
    let dir = &state.services().directory;
    // Registered before the topic is marked owned, so that whoever sees it owned also sees
    // the claim in progress (and waits for the subscription below).
    let lock = state.begin_claim(topic.as_str());
    let guard = lock.lock().await;
    let claimed = match dir.claim_topic(topic, user_id).await {
        Ok(c) => c,
        Err(e) => {
            drop(guard);
            state.end_claim(topic.as_str());
            return Err(ApiError::from(e));
        }
    };
    if !claimed {
        // Someone else won the claim; their subscription is theirs to finish.
        drop(guard);
        return Ok(());
    }
    let subscribed = subscribe_owner(state, user_id, topic).await;
    drop(guard);
    state.end_claim(topic.as_str());
    subscribed
}

/// The new owner's subscription to their topic, so the first message already reaches them.
async fn subscribe_owner(state: &AppState, user_id: i64, topic: &TopicName) -> ApiResult<()> {
    let spec = SourceSpec::Topic {
        topic: topic.as_str().to_owned(),
    };
    state
        .services()
        .users()
        .ask(
            &user_avatar(user_id),
            |reply| UserMsg::Subscribe {
                source: spec,
                filter: Filter::default(),
                reply,
            },
            state.cfg().ask_timeout,
        )
        .await??;
    Ok(())
}
