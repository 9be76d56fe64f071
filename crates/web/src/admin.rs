//! Administration of users and tokens, used by the `tidings user` and `tidings token`
//! commands. Every route needs an administrator's credential.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{TokenBody, token_label};
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub password: Option<String>,
}

/// `POST /api/v1/admin/users`: creates a user and their first API token.
pub async fn create_user(
    State(state): State<AppState>,
    _admin: Admin,
    body: Result<Json<NewUser>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(b) = body?;
    let dir = &state.services().directory;
    let user = dir.create_user(&b.name, b.password, b.admin).await?;
    let (_, secret) = dir.create_token(user.id, "created with the user").await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": user, "token": secret})),
    ))
}

/// `GET /api/v1/admin/users`.
pub async fn list_users(State(state): State<AppState>, _admin: Admin) -> Json<Value> {
    Json(json!({ "users": state.services().directory.users() }))
}

/// `DELETE /api/v1/admin/users/{name}`.
pub async fn remove_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    if admin.user.name == name {
        return Err(ApiError::bad_request(
            "invalid",
            "an administrator cannot remove their own account",
        ));
    }
    let user = state.services().directory.remove_user(&name).await?;
    Ok(Json(json!({ "user": user })))
}

/// Body of `PUT /api/v1/admin/users/{name}/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    pub password: String,
}

/// `PUT /api/v1/admin/users/{name}/password`: sets a user's web sign-in password (8-1024
/// bytes); their web sessions end.
pub async fn set_password(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    body: Result<Json<PasswordBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    let user = state
        .services()
        .directory
        .set_password(&name, body.password)
        .await?;
    Ok(Json(json!({ "user": user })))
}

/// `POST /api/v1/admin/users/{name}/tokens`.
pub async fn create_token(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    body: Result<Json<TokenBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let label = token_label(body)?;
    let dir = &state.services().directory;
    let user = dir
        .user_by_name(&name)
        .ok_or_else(|| ApiError::not_found(format!("user {name:?} not found")))?;
    let (info, secret) = dir.create_token(user.id, &label).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": info, "secret": secret})),
    ))
}

/// `GET /api/v1/admin/tokens[?user=NAME]`.
pub async fn list_tokens(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query?;
    let dir = &state.services().directory;
    let user = match q.get("user") {
        Some(name) => Some(
            dir.user_by_name(name)
                .ok_or_else(|| ApiError::not_found(format!("user {name:?} not found")))?
                .id,
        ),
        None => None,
    };
    Ok(Json(json!({ "tokens": dir.tokens(user) })))
}

/// `DELETE /api/v1/admin/tokens/{id}`.
pub async fn revoke_token(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found("token not found"))?;
    state.services().directory.revoke_token(id, None).await?;
    Ok(Json(json!({ "revoked": id })))
}
