//! The REST API of a signed-in user: account, history and acks, subscriptions, topics and
//! grants, API tokens. Every listing and lookup is scoped to the caller; what belongs to
//! someone else answers 404 exactly like what does not exist.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tidings_core::ids::user_avatar;
use tidings_core::{Filter, NotificationId, Priority, TopicName};
use tidings_routing::directory::{Grant, TopicAccess};
use tidings_routing::history::{self, HistoryQuery};
use tidings_routing::source::SourceMsg;
use tidings_routing::source::imap;
use tidings_routing::user::{SourceSpec, UserMsg};
use tidings_store::rusqlite::OptionalExtension as _;
use tidings_store::{now_ms, rusqlite};

use crate::AppState;
use crate::auth::Authed;
use crate::error::{ApiError, ApiResult};
use crate::publish::claim_topic;

/// `GET /api/v1/account`: who am I, and where I am reachable now: the live web stream,
/// each XMPP address (its most available resource), and overall (the most available of all).
pub async fn account(State(state): State<AppState>, auth: Authed) -> ApiResult<Json<Value>> {
    let services = state.services();
    let open = services.live.open_streams(auth.user.id);
    let mut xmpp = serde_json::Map::new();
    // Most available first, as XMPP orders shows; the web counts as available.
    let mut best = if open > 0 { 1 } else { 5 };
    if let Some(agent) = services.xmpp() {
        let all = services
            .users()
            .ask(
                &user_avatar(auth.user.id),
                |reply| UserMsg::ListDestinations { reply },
                state.cfg().ask_timeout,
            )
            .await?;
        for d in all.iter() {
            if let Ok(tidings_sinks::DestinationConfig::Xmpp(x)) = &d.config {
                let show = agent.show(&x.jid);
                best = best.min(show as usize);
                xmpp.insert(x.jid.clone(), json!(format!("{show:?}").to_lowercase()));
            }
        }
    }
    let overall = ["chat", "available", "away", "xa", "dnd", "offline"][best];
    Ok(Json(json!({
        "user": auth.user,
        "presence": {
            "web": if open > 0 { "online" } else { "offline" },
            "open_streams": open,
            "xmpp": xmpp,
            "overall": overall,
        },
    })))
}

/// Parses a time parameter: unix seconds, or a duration back from now (`10m`, `2h`, `1d`).
pub(crate) fn parse_time(name: &str, v: &str) -> ApiResult<i64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<i64>() {
        return Ok(n);
    }
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: i64 = num.parse().map_err(|_| bad_time(name, v))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(bad_time(name, v)),
    };
    Ok(now_ms() / 1000 - secs)
}

fn bad_time(name: &str, v: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_query",
        format!("{name}={v:?}: use unix seconds or a duration like 30m, 2h, 1d"),
    )
}

fn parse_i64(name: &str, v: &str) -> ApiResult<i64> {
    v.parse().map_err(|_| {
        ApiError::bad_request("invalid_query", format!("{name}={v:?} is not a number"))
    })
}

/// `GET /api/v1/notifications`: the caller's history, newest first, with cursor paging.
pub async fn list_notifications(
    State(state): State<AppState>,
    auth: Authed,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query?;
    let mut hq = HistoryQuery {
        user_id: auth.user.id,
        limit: 50,
        ..Default::default()
    };
    for (k, v) in &q {
        match k.as_str() {
            "limit" => {
                let n = parse_i64(k, v)?;
                if !(1..=1000).contains(&n) {
                    return Err(ApiError::bad_request("invalid_query", "limit is 1-1000"));
                }
                hq.limit = n as usize;
            }
            "cursor" | "before" => hq.before = Some(parse_i64(k, v)?),
            "after" => hq.after = Some(parse_i64(k, v)?),
            "source" => hq.source = Some(v.clone()),
            "topic" => hq.source = Some(TopicName::parse(v)?.source_id()),
            "tag" | "tags" => hq.tags.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            ),
            "priority" => {
                for p in v.split(',').filter(|p| !p.trim().is_empty()) {
                    hq.priorities.push(Priority::parse(p)?.as_number());
                }
            }
            "since" => hq.since = Some(parse_time(k, v)?),
            "until" => hq.until = Some(parse_time(k, v)?),
            // ntfy's credential parameter, already consumed by authentication.
            "auth" => {}
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown parameter {other:?}"),
                ));
            }
        }
    }
    let (items, next) = history::list(&state.services().store, hq).await?;
    Ok(Json(json!({
        "notifications": items,
        "next_cursor": next.map(|n| n.to_string()),
    })))
}

fn parse_id(id: &str) -> ApiResult<NotificationId> {
    NotificationId::parse(id).ok_or_else(|| ApiError::not_found("notification not found"))
}

/// `GET /api/v1/notifications/{id}`: the item, with its delivery record (every
/// destination it was sent to, why, and every attempt).
pub async fn get_notification(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    let store = &state.services().store;
    let item = history::get(store, auth.user.id, id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("notification not found"))?;
    let deliveries =
        tidings_routing::agents::outbox::records_for_notification(store, auth.user.id, id.as_str())
            .await?;
    let mut v = json!(item);
    v["deliveries"] = json!(deliveries);
    Ok(Json(v))
}

/// `POST /api/v1/notifications/{id}/ack`: stops escalation and marks it read.
pub async fn ack_notification(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    let outcome = state
        .services()
        .users()
        .ask(
            &user_avatar(auth.user.id),
            |reply| UserMsg::Ack {
                id: id.clone(),
                reply,
            },
            state.cfg().ask_timeout,
        )
        .await??;
    Ok(Json(json!({
        "id": id,
        "acked": true,
        "acked_at": outcome.acked_at,
        "already_acked": !outcome.newly,
    })))
}

/// Body of `POST /api/v1/notifications/{id}/reply`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    pub text: String,
}

/// Longest reply text.
const MAX_REPLY: usize = 4000;

/// `POST /api/v1/notifications/{id}/reply`: answers a notification. The reply is an ack and
/// goes to the source's reply path (a topic publisher's `Reply-To-Url`, a mail's sender);
/// 202 once it is durable in the ingest queue.
pub async fn reply_notification(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
    body: Result<Json<ReplyBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = parse_id(&id)?;
    let Json(body) = body?;
    let text = body.text.trim().to_owned();
    if text.is_empty() || text.chars().count() > MAX_REPLY {
        return Err(ApiError::bad_request(
            "invalid_reply",
            format!("a reply is 1-{MAX_REPLY} characters"),
        ));
    }
    history::get(&state.services().store, auth.user.id, id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("notification not found"))?;
    let payload = serde_json::to_string(&tidings_routing::ingest::Ingest::TextReply {
        notification_id: id.as_str().to_owned(),
        via: "api".into(),
        text,
    })
    .map_err(|e| ApiError::internal(e.to_string()))?;
    state
        .queue()
        .append(user_avatar(auth.user.id), payload)
        .await
        .map_err(|e| ApiError::unavailable(format!("the reply could not be queued: {e}")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "queued": true})),
    ))
}

/// Body of `POST /api/v1/subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    pub source: SourceSpec,
    #[serde(default)]
    pub filter: Filter,
}

/// `GET /api/v1/subscriptions`.
pub async fn list_subscriptions(
    State(state): State<AppState>,
    auth: Authed,
) -> ApiResult<Json<Value>> {
    let subs = history::subscriptions(&state.services().store, auth.user.id).await?;
    Ok(Json(json!({ "subscriptions": subs })))
}

/// `GET /api/v1/subscriptions/{id}`.
pub async fn get_subscription(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let subs = history::subscriptions(&state.services().store, auth.user.id).await?;
    let sub = subs
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::not_found("subscription not found"))?;
    let status = source_status(&state, &sub.source_id).await?;
    let mut v = json!(sub);
    v["status"] = json!(status);
    Ok(Json(v))
}

/// The poll state of a feed, page or IMAP source (`None` for topics).
async fn source_status(
    state: &AppState,
    source_id: &str,
) -> ApiResult<Option<tidings_routing::source::SourceStatus>> {
    if source_id.starts_with("topic:") {
        return Ok(None);
    }
    Ok(state
        .services()
        .sources()
        .ask(
            &tidings_core::ids::source_avatar(source_id),
            |reply| SourceMsg::Status { reply },
            state.cfg().ask_timeout,
        )
        .await?)
}

/// `POST /api/v1/subscriptions`: subscribe to a source (with an optional filter). Subscribing
/// to a topic needs ownership or a subscribe grant; an unowned topic becomes the caller's.
pub async fn create_subscription(
    State(state): State<AppState>,
    auth: Authed,
    body: Result<Json<NewSubscription>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(mut body) = body?;
    body.filter.validate()?;
    match &body.source {
        SourceSpec::Topic { topic } => {
            let topic = TopicName::parse(topic)?;
            let dir = &state.services().directory;
            if dir.topic_access(topic.as_str(), auth.user.id) == TopicAccess::Unclaimed {
                claim_topic(&state, auth.user.id, &topic).await?;
            }
            if !dir
                .topic_access(topic.as_str(), auth.user.id)
                .can_subscribe()
            {
                return Err(ApiError::forbidden(format!(
                    "topic {topic:?} belongs to another user who has not granted you subscribe"
                )));
            }
        }
        SourceSpec::Feed { url, backfill } => {
            // Validates the spec (URL form, backfill) before any fetch.
            body.source.source_id()?;
            let url = crate::discover::feed_url(&state, url).await?;
            body.source = SourceSpec::Feed {
                url,
                backfill: *backfill,
            };
        }
        SourceSpec::Page { url, .. } => {
            body.source.source_id()?;
            state
                .services()
                .fetcher
                .check_url(url)
                .await
                .map_err(crate::discover::refused)?;
        }
        SourceSpec::Imap { .. } => {
            // The login is tried before anything is saved.
            let spec = body.source.normalized()?;
            let source_id = spec.source_id_for(auth.user.id)?;
            imap::prepare(state.services(), &source_id, &spec, state.cfg().ask_timeout)
                .await
                .map_err(imap_refused)?;
            body.source = spec;
        }
    }
    let sub = state
        .services()
        .users()
        .ask(
            &user_avatar(auth.user.id),
            |reply| UserMsg::Subscribe {
                source: body.source,
                filter: body.filter,
                reply,
            },
            state.cfg().ask_timeout,
        )
        .await??;
    Ok((StatusCode::CREATED, Json(json!(sub))))
}

/// A mailbox subscription that failed its login check: 400 with what the server said.
fn imap_refused(e: imap::PrepareError) -> ApiError {
    use tidings_sources::imap::ImapError;
    match e {
        imap::PrepareError::Invalid(e) => e.into(),
        imap::PrepareError::Avatar(e) => e.into(),
        imap::PrepareError::Login(e) => {
            let code = match &e {
                ImapError::Auth(_) => "imap_login_failed",
                ImapError::NoFolder(_) => "imap_no_folder",
                _ => "imap_connect_failed",
            };
            ApiError::bad_request(code, e.to_string())
        }
    }
}

/// `DELETE /api/v1/subscriptions/{id}`.
pub async fn delete_subscription(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let sub = unsubscribe(&state, auth.user.id, id).await?;
    Ok(Json(json!({ "deleted": sub })))
}

async fn unsubscribe(
    state: &AppState,
    user_id: i64,
    id: String,
) -> ApiResult<tidings_routing::user::Subscription> {
    Ok(state
        .services()
        .users()
        .ask(
            &user_avatar(user_id),
            |reply| UserMsg::Unsubscribe { id, reply },
            state.cfg().ask_timeout,
        )
        .await??)
}

/// `GET /api/v1/topics`: topics the caller owns, and those granted to them.
pub async fn list_topics(State(state): State<AppState>, auth: Authed) -> Json<Value> {
    let dir = &state.services().directory;
    let owned = dir.owned_topics(auth.user.id);
    let granted = dir.granted_topics(auth.user.id);
    Json(json!({ "owned": owned, "granted": granted }))
}

/// `GET /api/v1/topics/{topic}`: details for the owner; rights for a grantee.
pub async fn get_topic(
    State(state): State<AppState>,
    auth: Authed,
    Path(topic): Path<String>,
) -> ApiResult<Json<Value>> {
    let dir = &state.services().directory;
    match dir.topic_access(&topic, auth.user.id) {
        TopicAccess::Owner => {
            let info = dir
                .topic_info(&topic)
                .ok_or_else(|| ApiError::not_found("topic not found"))?;
            let mut v = json!(info);
            // The key replies to this topic's publishers are signed with.
            v["reply_secret"] = json!(tidings_routing::source::reply::topic_reply_key(
                &state.services().secrets,
                &topic
            ));
            Ok(Json(v))
        }
        TopicAccess::Granted(g) => Ok(Json(json!({"name": topic, "granted": g}))),
        _ => Err(ApiError::not_found("topic not found")),
    }
}

/// Body of `PUT /api/v1/topics/{topic}/grants/{user}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
}

/// `PUT /api/v1/topics/{topic}/grants/{user}`: the owner lets another user publish and/or
/// subscribe.
pub async fn put_grant(
    State(state): State<AppState>,
    auth: Authed,
    Path((topic, user)): Path<(String, String)>,
    body: Result<Json<GrantBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body?;
    set_grant(
        &state,
        &auth,
        &topic,
        &user,
        Grant {
            publish: b.publish,
            subscribe: b.subscribe,
        },
    )
    .await
}

/// `DELETE /api/v1/topics/{topic}/grants/{user}`.
pub async fn delete_grant(
    State(state): State<AppState>,
    auth: Authed,
    Path((topic, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    set_grant(
        &state,
        &auth,
        &topic,
        &user,
        Grant {
            publish: false,
            subscribe: false,
        },
    )
    .await
}

async fn set_grant(
    state: &AppState,
    auth: &Authed,
    topic: &str,
    grantee: &str,
    g: Grant,
) -> ApiResult<Json<Value>> {
    let dir = &state.services().directory;
    if dir.topic_access(topic, auth.user.id) != TopicAccess::Owner {
        return Err(ApiError::not_found("topic not found"));
    }
    let previous = dir.set_grant(topic, auth.user.id, grantee, g).await?;
    // Losing subscribe ends the grantee's subscription to the topic.
    if previous.is_some_and(|p| p.subscribe)
        && !g.subscribe
        && let Some(u) = dir.user_by_name(grantee)
    {
        let source_id = format!("topic:{topic}");
        let uid = u.id;
        let sub: Option<String> = state
            .services()
            .store
            .read(move |c| {
                c.query_row(
                    "SELECT id FROM subscriptions WHERE user_id = ?1 AND source_id = ?2",
                    rusqlite::params![uid, source_id],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        if let Some(id) = sub {
            unsubscribe(state, uid, id).await?;
        }
    }
    Ok(Json(
        json!({"topic": topic, "user": grantee, "publish": g.publish, "subscribe": g.subscribe}),
    ))
}

/// `GET /api/v1/tokens`: the caller's tokens (never their secrets).
pub async fn list_tokens(State(state): State<AppState>, auth: Authed) -> Json<Value> {
    Json(json!({ "tokens": state.services().directory.tokens(Some(auth.user.id)) }))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[serde(default)]
    pub label: String,
}

/// The label of a new token; a request without a JSON body means no label.
pub(crate) fn token_label(body: Result<Json<TokenBody>, JsonRejection>) -> ApiResult<String> {
    match body {
        Ok(Json(b)) => Ok(b.label),
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(String::new()),
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/v1/tokens`: a new token for the caller; the secret is shown once.
pub async fn create_token(
    State(state): State<AppState>,
    auth: Authed,
    body: Result<Json<TokenBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let label = token_label(body)?;
    let (info, secret) = state
        .services()
        .directory
        .create_token(auth.user.id, &label)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": info, "secret": secret})),
    ))
}

/// `DELETE /api/v1/tokens/{id}`: revoke one of the caller's tokens.
pub async fn revoke_token(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found("token not found"))?;
    state
        .services()
        .directory
        .revoke_token(id, Some(auth.user.id))
        .await?;
    Ok(Json(json!({ "revoked": id })))
}
