//! WebSub callbacks: `GET /websub/<source id>` answers a hub's verification of intent,
//! `POST /websub/<source id>` receives pushed content. Hubs hold no tidings credential: a
//! verification is accepted only for a subscription the source itself requested, and a push
//! only with a valid `X-Hub-Signature` made with that subscription's secret.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tidings_core::ids::source_avatar;
use tidings_routing::source::SourceMsg;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

fn web_source(id: &str) -> ApiResult<()> {
    let ok = (id.starts_with("feed:") || id.starts_with("page:"))
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':');
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found("no such subscription"))
    }
}

/// `GET /websub/{source}`: echo `hub.challenge` if we asked for this subscription.
pub async fn verify(
    State(state): State<AppState>,
    Path(source): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query?;
    web_source(&source)?;
    state.limiter().check(&format!("websub:{source}"))?;
    let (Some(mode), Some(topic), Some(challenge)) = (
        q.get("hub.mode"),
        q.get("hub.topic"),
        q.get("hub.challenge"),
    ) else {
        return Err(ApiError::bad_request(
            "invalid_query",
            "a verification needs hub.mode, hub.topic and hub.challenge",
        ));
    };
    let lease_seconds = q.get("hub.lease_seconds").and_then(|l| l.parse().ok());
    let ok = state
        .services()
        .sources()
        .ask(
            &source_avatar(&source),
            |reply| SourceMsg::WebSubVerify {
                mode: mode.clone(),
                topic: topic.clone(),
                lease_seconds,
                reply,
            },
            state.cfg().ask_timeout,
        )
        .await?;
    if !ok {
        return Err(ApiError::not_found(
            "no pending subscription for this topic",
        ));
    }
    let mut r = challenge.clone().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("static"),
    );
    Ok(r)
}

/// `POST /websub/{source}`: content from the hub. 202 once new items are durable; a push
/// with a bad signature is acknowledged but ignored, as WebSub requires; 410 tells a hub
/// that no such subscription exists (so it stops).
pub async fn push(
    State(state): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    web_source(&source)?;
    state.limiter().check(&format!("websub:{source}"))?;
    let body = body?;
    let signature = headers
        .get("x-hub-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let r = state
        .services()
        .sources()
        .ask(
            &source_avatar(&source),
            |reply| SourceMsg::WebSubPush {
                body: body.to_vec(),
                signature,
                content_type,
                reply,
            },
            state.cfg().ask_timeout,
        )
        .await?;
    match r {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(reason) if reason == "no such subscription" => Err(ApiError::new(
            StatusCode::GONE,
            "gone",
            "no such subscription",
        )),
        Err(reason) => {
            tracing::warn!(%source, %reason, "WebSub push ignored");
            metrics::counter!("tidings_websub_rejected_total").increment(1);
            Ok(StatusCode::ACCEPTED)
        }
    }
}
