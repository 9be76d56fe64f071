//! `POST /sms/twilio/{destination}`: Twilio's inbound-message webhook for a phone
//! destination, so an SMS reply is an ack or a reply. The request is authenticated by
//! Twilio's signature (`X-Twilio-Signature`, HMAC-SHA1 with the destination's auth token over
//! the URL Twilio called and the sorted form fields), and the message must come from the
//! destination's own number. Accepted messages are appended to the durable ingest queue
//! for the user avatar before the answer (an empty TwiML response, so no SMS is sent back).

use axum::Form;
use axum::extract::{ConnectInfo, OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tidings_routing::destinations;
use tidings_routing::ingest::Ingest;
use tidings_sinks::DestinationConfig;
use tidings_store::now_ms;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Longest SMS text taken (a concatenated SMS is at most a few thousand characters).
const MAX_TEXT: usize = 2000;

fn digits(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// The handler. Every refusal looks the same from outside except a bad signature (403).
pub async fn twilio(
    State(state): State<AppState>,
    Path(destination): Path<String>,
    OriginalUri(uri): OriginalUri,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> ApiResult<Response> {
    state.limiter().check(&format!("sms:{}", peer.ip()))?;
    let services = state.services();
    let secrets = services.secrets.clone();
    let id = destination.clone();
    let dest = services
        .store
        .read(move |c| destinations::load(c, &secrets, &id))
        .await?;
    let not_found = || ApiError::not_found("no such SMS destination");
    let dest = dest.ok_or_else(not_found)?;
    let Ok(DestinationConfig::Twilio(cfg)) = &dest.config else {
        return Err(not_found());
    };
    // Twilio signs the URL it called: this server's public URL plus path and query.
    let url = format!(
        "{}{}",
        state.cfg().base_url.trim_end_matches('/'),
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !tidings_sinks::twilio::verify_signature(&cfg.auth_token, &url, &fields, signature) {
        return Err(ApiError::forbidden(
            "the X-Twilio-Signature does not match (is base_url the URL Twilio calls?)",
        ));
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    if field("AccountSid") != cfg.account_sid || digits(field("From")) != digits(&cfg.to) {
        return Err(ApiError::forbidden(
            "only the destination's own phone can answer its messages",
        ));
    }
    let text = tidings_core::notification::truncate_chars(field("Body").trim(), MAX_TEXT);
    let payload = serde_json::to_string(&Ingest::SmsReply {
        destination_id: dest.id.clone(),
        text,
        received_at: now_ms(),
    })
    .map_err(|e| ApiError::internal(e.to_string()))?;
    state
        .queue()
        .append(tidings_core::ids::user_avatar(dest.user_id), payload)
        .await
        .map_err(|e| ApiError::unavailable(format!("the message could not be queued: {e}")))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>",
    )
        .into_response())
}
