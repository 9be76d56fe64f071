//! Operations and sign-in: health and readiness probes, Prometheus metrics, the OpenAPI
//! document, one-time sign-in links, password login and the landing page.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Admin, Authed, SESSION_COOKIE};
use crate::error::{ApiError, ApiResult};

/// The OpenAPI document of the REST API; a test checks it against the router.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the process accepts work (started, not shutting down).
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::unavailable("not ready").into_response()
    }
}

/// `GET /metrics`: Prometheus text. Needs an administrator unless `metrics_public`.
pub async fn metrics(State(state): State<AppState>, req: Request) -> ApiResult<Response> {
    if !state.cfg().metrics_public {
        let (mut parts, _) = req.into_parts();
        use axum::extract::FromRequestParts;
        Admin::from_request_parts(&mut parts, &state).await?;
    }
    let body = state.metrics().map(|h| h.render()).unwrap_or_default();
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    let mut r = OPENAPI.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn session_cookie(sid: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `GET /signin/{code}`: redeems a one-time sign-in link and opens a web session.
pub async fn signin_link(
    State(state): State<AppState>,
    Path(code): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let dir = &state.services().directory;
    // Per address, so guessing from one place cannot lock everyone else out.
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    state.limiter().check(&format!("signin:{peer}"))?;
    let Some((_user, sid)) = dir.redeem_signin_code(&code).await? else {
        return Err(ApiError::not_found(
            "this sign-in link is unknown, used or expired",
        ));
    };
    let mut r = Redirect::to("/").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&sid, 30 * 24 * 3600));
    Ok(r)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub name: String,
    pub password: String,
}

/// `POST /api/v1/login`: password login; answers with a session cookie.
pub async fn login(
    State(state): State<AppState>,
    body: Result<Json<Login>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(b) = body?;
    state.limiter().check(&format!("p:{}", b.name))?;
    let dir = &state.services().directory;
    let Some(user) = dir.verify_password(&b.name, b.password).await? else {
        return Err(ApiError::unauthorized("wrong user name or password"));
    };
    let sid = dir.create_session(user.id).await?;
    let mut r = Json(json!({"user": user})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&sid, 30 * 24 * 3600));
    Ok(r)
}

/// `POST /api/v1/logout`: ends the web session.
pub async fn logout(
    State(state): State<AppState>,
    _auth: Authed,
    headers: HeaderMap,
) -> ApiResult<Response> {
    for cookie in headers.get_all(header::COOKIE) {
        let Ok(cookie) = cookie.to_str() else {
            continue;
        };
        for c in cookie.split(';') {
            if let Some(v) = c
                .trim()
                .strip_prefix(SESSION_COOKIE)
                .and_then(|r| r.strip_prefix('='))
            {
                state.services().directory.end_session(v).await?;
            }
        }
    }
    let mut r = Json(json!({"signed_out": true})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0));
    Ok(r)
}

/// `GET /`: a landing page until the web interface exists.
pub async fn landing(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    use axum::extract::FromRequestParts;
    let who = Authed::from_request_parts(&mut parts, &state).await.ok();
    let base = html_escape(&state.cfg().base_url);
    let body = match who {
        Some(a) => format!(
            "<p>Signed in as <b>{}</b>. Your notifications: <a href=\"/api/v1/notifications\">/api/v1/notifications</a>, \
             live: <a href=\"/api/v1/stream\">/api/v1/stream</a>.</p>\
             <p>Publish with <code>curl -H \"Authorization: Bearer $TOKEN\" -d \"Backup finished\" {base}/backups</code>.</p>",
            html_escape(&a.user.name)
        ),
        None => {
            "<p>Sign in with the one-time link <code>tidings serve</code> printed at first start, \
                 or call the API with <code>Authorization: Bearer &lt;token&gt;</code>.</p>"
                .to_owned()
        }
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tidings</title></head>\
         <body><h1>tidings</h1>{body}<p><a href=\"/api/v1/openapi.json\">API reference (OpenAPI)</a></p></body></html>"
    ))
    .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How long a handler may take to produce its response head. Streams are not cut by it:
/// their handlers answer at once and the body flows afterwards.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Bounds the time of every request, answering 503 in the usual JSON shape when it runs out.
pub async fn request_timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            ApiError::unavailable("the request took too long inside the server").into_response()
        }
    }
}

/// Counts requests by route and status.
pub async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let r = next.run(req).await;
    let status = r.status();
    metrics::counter!(
        "tidings_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => status.as_u16().to_string()
    )
    .increment(1);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        metrics::counter!("tidings_http_errors_total").increment(1);
    }
    r
}
