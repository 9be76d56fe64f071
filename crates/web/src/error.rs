//! The one error shape of the HTTP edge: `{"error": {"code": "...", "message": "..."}}` with
//! the right status. Every handler returns [`ApiError`]; axum's own rejections (bad JSON,
//! body too large, unknown route) are mapped to it too.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(1);
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let mut r = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tidings\""),
            );
        }
        r
    }
}

impl From<tidings_core::InputError> for ApiError {
    fn from(e: tidings_core::InputError) -> Self {
        use tidings_core::InputError as I;
        let code = match &e {
            I::Priority(_) => "invalid_priority",
            I::TopicName(_) | I::ReservedTopic(_) => "invalid_topic",
            I::Actions(_) => "invalid_actions",
            I::Tag(_) | I::TooManyTags(_) => "invalid_tags",
            I::TooLong { .. } => "too_long",
            I::Click(_) => "invalid_click",
            I::Filter(_) => "invalid_filter",
        };
        ApiError::bad_request(code, e.to_string())
    }
}

impl From<tidings_routing::Error> for ApiError {
    fn from(e: tidings_routing::Error) -> Self {
        use tidings_routing::Error as E;
        match e {
            E::Input(i) => i.into(),
            E::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            E::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            E::Forbidden(m) => ApiError::forbidden(m),
            E::Invalid(m) => ApiError::bad_request("invalid", m),
            E::TooSoon(m) => {
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_soon", m);
                e.retry_after = Some(60);
                e
            }
            E::Avatar(tidings_bus::avatars::Error::Timeout) => {
                ApiError::unavailable("the request timed out inside the server; try again")
            }
            E::Avatar(tidings_bus::avatars::Error::ShutDown) => {
                ApiError::unavailable("the server is shutting down")
            }
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<tidings_bus::avatars::Error> for ApiError {
    fn from(e: tidings_bus::avatars::Error) -> Self {
        tidings_routing::Error::Avatar(e).into()
    }
}

impl From<tidings_store::Error> for ApiError {
    fn from(e: tidings_store::Error) -> Self {
        match e {
            tidings_store::Error::Closed => ApiError::unavailable("the server is shutting down"),
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "too_large",
                "the request body is over the size limit",
            )
        } else {
            ApiError::new(status, "bad_body", r.body_text())
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                status,
                "too_large",
                "the request body is over the size limit",
            );
        }
        let code = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            "unsupported_media_type"
        } else {
            "invalid_json"
        };
        ApiError::new(
            if status == StatusCode::UNPROCESSABLE_ENTITY {
                StatusCode::BAD_REQUEST
            } else {
                status
            },
            code,
            r.body_text(),
        )
    }
}

impl From<axum::extract::ws::rejection::WebSocketUpgradeRejection> for ApiError {
    fn from(r: axum::extract::ws::rejection::WebSocketUpgradeRejection) -> Self {
        ApiError::new(r.status(), "not_websocket", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Fallback for a known route with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
