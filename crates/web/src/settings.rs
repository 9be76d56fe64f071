//! `/api/v1/settings` (time zone, quiet hours) and `/api/v1/rules` (routing rules): a
//! user's delivery policy, owned by the user avatar.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use tidings_core::ids::user_avatar;
use tidings_routing::schedule::UserSettings;
use tidings_routing::user::UserMsg;

use crate::AppState;
use crate::auth::Authed;
use crate::error::ApiResult;

/// `GET /api/v1/settings`.
pub async fn get(State(state): State<AppState>, auth: Authed) -> ApiResult<Json<UserSettings>> {
    let s = state
        .services()
        .users()
        .ask(
            &user_avatar(auth.user.id),
            |reply| UserMsg::GetSettings { reply },
            state.cfg().ask_timeout,
        )
        .await?;
    Ok(Json(s))
}

/// `PUT /api/v1/settings`: replaces the settings. Ending quiet hours (or changing them so
/// that it is not quiet now) releases what they held.
pub async fn put(
    State(state): State<AppState>,
    auth: Authed,
    body: Result<Json<UserSettings>, JsonRejection>,
) -> ApiResult<Json<UserSettings>> {
    let Json(settings) = body?;
    settings.validate()?;
    let s = state
        .services()
        .users()
        .ask(
            &user_avatar(auth.user.id),
            |reply| UserMsg::PutSettings { settings, reply },
            state.cfg().ask_timeout,
        )
        .await??;
    Ok(Json(s))
}

/// `GET /api/v1/rules`: the caller's routing rules.
pub async fn get_rules(
    State(state): State<AppState>,
    auth: Authed,
) -> ApiResult<Json<tidings_routing::rules::Rules>> {
    let r = state
        .services()
        .users()
        .ask(
            &user_avatar(auth.user.id),
            |reply| UserMsg::GetRules { reply },
            state.cfg().ask_timeout,
        )
        .await?;
    Ok(Json(r))
}

/// `PUT /api/v1/rules`: replaces the routing rules (checked against the caller's
/// destinations; a 400 says which rule and step is wrong and why).
pub async fn put_rules(
    State(state): State<AppState>,
    auth: Authed,
    body: Result<Json<tidings_routing::rules::Rules>, JsonRejection>,
) -> ApiResult<Json<tidings_routing::rules::Rules>> {
    let Json(rules) = body?;
    let r = state
        .services()
        .users()
        .ask(
            &user_avatar(auth.user.id),
            |reply| UserMsg::PutRules { rules, reply },
            state.cfg().ask_timeout,
        )
        .await??;
    Ok(Json(r))
}
