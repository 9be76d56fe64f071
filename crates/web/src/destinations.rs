//! `/api/v1/destinations`: a user's destinations (webhooks, mail, SMS, chat services), their
//! verification, a "send test" action and their delivery records. Every change goes through
//! the user avatar, which owns the destinations; checks that need the network (the URL
//! rules, a configured mail relay) run here first, so the avatar never waits on them.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tidings_core::ids::user_avatar;
use tidings_routing::agents::outbox;
use tidings_routing::destinations::{Destination, DestinationOptions};
use tidings_routing::user::{DestinationPatch, NewDestination, UserMsg};
use tidings_sinks::DestinationConfig;

use crate::AppState;
use crate::auth::Authed;
use crate::error::{ApiError, ApiResult};

/// Body of `POST /api/v1/destinations`: a name, and either an Apprise-style `url` or a
/// `config` object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDestinationBody {
    pub name: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub options: DestinationOptions,
}

fn sink_error(e: tidings_sinks::Error) -> ApiError {
    use tidings_sinks::Error as E;
    match e {
        E::Forbidden(m) => ApiError::bad_request("forbidden_address", m),
        E::NotAvailable(m) => ApiError::bad_request("not_available", m),
        e => ApiError::bad_request("invalid_destination", e.to_string()),
    }
}

async fn ask<R: Send + 'static>(
    state: &AppState,
    user_id: i64,
    msg: impl FnOnce(tokio::sync::oneshot::Sender<R>) -> UserMsg,
) -> ApiResult<R> {
    Ok(state
        .services()
        .users()
        .ask(&user_avatar(user_id), msg, state.cfg().ask_timeout)
        .await?)
}

/// The view of a destination with its live health and queue length.
async fn full_view(state: &AppState, d: &Destination) -> ApiResult<Value> {
    let mut v = d.view();
    let ob = &state.services().outbox;
    v["health"] = json!(ob.health(&d.id));
    v["pending"] = json!(outbox::pending(&state.services().store, &d.id).await?);
    Ok(v)
}

/// `GET /api/v1/destinations`.
pub async fn list(State(state): State<AppState>, auth: Authed) -> ApiResult<Json<Value>> {
    let all = ask(&state, auth.user.id, |reply| UserMsg::ListDestinations {
        reply,
    })
    .await?;
    let mut out = Vec::with_capacity(all.len());
    for d in &all {
        out.push(full_view(&state, d).await?);
    }
    Ok(Json(json!({ "destinations": out })))
}

/// `POST /api/v1/destinations`: adds a destination. A webhook's signing secret is in this
/// answer only; a destination that reaches a third party is sent a verification code.
pub async fn create(
    State(state): State<AppState>,
    auth: Authed,
    body: Result<Json<NewDestinationBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    let config = match (body.url, body.config) {
        (Some(url), None) => DestinationConfig::parse_url(&url).map_err(sink_error)?,
        (None, Some(v)) => serde_json::from_value::<DestinationConfig>(v)
            .map_err(|e| ApiError::bad_request("invalid_destination", format!("config: {e}")))?,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_destination",
                "give either `url` (an Apprise-style URL) or `config` (an object with `kind`)",
            ));
        }
    };
    let config = config.prepare().map_err(sink_error)?;
    state
        .services()
        .outbox
        .sinks()
        .check(&config)
        .await
        .map_err(sink_error)?;
    let secret = config.webhook_secret().map(str::to_owned);
    let d = ask(&state, auth.user.id, |reply| UserMsg::AddDestination {
        new: NewDestination {
            name: body.name,
            config,
            options: body.options,
        },
        reply,
    })
    .await??;
    let mut v = full_view(&state, &d).await?;
    if let Some(s) = secret {
        v["secret"] = json!(s);
    }
    if d.needs_verification() {
        v["verification"] = json!({
            "sent_to": v["address"],
            "expires_in": tidings_routing::destinations::CODE_TTL_MS / 1000,
        });
    }
    Ok((StatusCode::CREATED, Json(v)))
}

async fn find(state: &AppState, user_id: i64, id: &str) -> ApiResult<std::sync::Arc<Destination>> {
    let all = ask(state, user_id, |reply| UserMsg::ListDestinations { reply }).await?;
    all.into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| ApiError::not_found("destination not found"))
}

/// `GET /api/v1/destinations/{id}`.
pub async fn get(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = find(&state, auth.user.id, &id).await?;
    Ok(Json(full_view(&state, &d).await?))
}

/// `PATCH /api/v1/destinations/{id}`: name and options.
pub async fn update(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
    body: Result<Json<DestinationPatch>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(patch) = body?;
    let d = ask(&state, auth.user.id, |reply| UserMsg::UpdateDestination {
        id,
        patch,
        reply,
    })
    .await??;
    Ok(Json(full_view(&state, &d).await?))
}

/// `DELETE /api/v1/destinations/{id}`: what was queued for it is recorded as dead.
pub async fn remove(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = ask(&state, auth.user.id, |reply| UserMsg::RemoveDestination {
        id,
        reply,
    })
    .await??;
    Ok(Json(json!({ "deleted": d.view() })))
}

/// Body of `POST /api/v1/destinations/{id}/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    pub code: String,
}

/// `POST /api/v1/destinations/{id}/verify`: enters the code sent to the destination.
pub async fn verify(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
    body: Result<Json<CodeBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    if body.code.len() > 32 {
        return Err(ApiError::bad_request("invalid", "that is not a code"));
    }
    let d = ask(&state, auth.user.id, |reply| UserMsg::VerifyDestination {
        id,
        code: body.code,
        reply,
    })
    .await??;
    Ok(Json(full_view(&state, &d).await?))
}

/// `POST /api/v1/destinations/{id}/code`: sends a new verification code (at most one a
/// minute).
pub async fn send_code(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    ask(&state, auth.user.id, |reply| UserMsg::SendCode {
        id,
        reply,
    })
    .await??;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "sent": true,
            "expires_in": tidings_routing::destinations::CODE_TTL_MS / 1000,
        })),
    ))
}

/// `POST /api/v1/destinations/{id}/test`: queues a test message; its delivery record shows
/// at `GET /api/v1/destinations/{id}/deliveries`.
pub async fn test(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let nid = ask(&state, auth.user.id, |reply| UserMsg::TestDestination {
        id,
        reply,
    })
    .await??;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "queued": true, "notification_id": nid })),
    ))
}

/// Query of `GET /api/v1/destinations/{id}/deliveries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[serde(default)]
    pub limit: Option<usize>,
    /// ntfy's credential parameter, consumed by authentication.
    #[serde(default)]
    pub auth: Option<String>,
}

/// `GET /api/v1/destinations/{id}/deliveries`: the newest delivery records, every attempt
/// included.
pub async fn deliveries(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", "limit is 1-500"));
    }
    let d = find(&state, auth.user.id, &id).await?;
    let records =
        outbox::records_for_destination(&state.services().store, auth.user.id, &d.id, limit)
            .await?;
    Ok(Json(json!({ "deliveries": records })))
}
