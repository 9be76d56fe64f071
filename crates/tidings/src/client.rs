//! The admin API client behind `tidings user …` and `tidings token …`.
//!
//! The CLI never opens the database: the running server owns it (single writer), so every
//! change goes through `/api/v1/admin/…` with the administrator credential that the server
//! keeps in the data dir. This module finds the server and that credential, speaks the API,
//! and turns failures into one-line messages an operator can act on.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::config::{self, Config};

/// File in the data dir holding the administrator token (written by `tidings serve`).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// File in the data dir where the running server writes `{"url": …, "pid": …}`.
pub const SERVER_FILE: &str = "server.json";
/// Bound on connecting and on a whole request: an admin command should fail, not hang,
/// when the server is wedged.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin command failed. The `Display` text is the whole message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no admin credential: start `tidings serve` once with this data dir, or set TIDINGS_ADMIN_TOKEN"
    )]
    NoCredential,
    #[error("cannot read the admin credential {}: {error}", path.display())]
    Credential { path: PathBuf, error: io::Error },
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach the tidings server at {url}: is `tidings serve` running?{}", detail_suffix(.detail))]
    Unreachable {
        url: String,
        /// Why, when it is not simply "connection refused".
        detail: Option<String>,
    },
    #[error("the tidings server at {url} did not answer within {}s", TIMEOUT.as_secs())]
    Timeout { url: String },
    /// The server answered with its JSON error shape.
    #[error("{message} ({code}, HTTP {})", status.as_u16())]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// The server answered something this client does not understand (version skew, a
    /// proxy's HTML error page).
    #[error("unexpected answer from {url} (HTTP {}): {detail}", status.as_u16())]
    Unexpected {
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("request to {url} failed: {detail}")]
    Request { url: String, detail: String },
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

/// A user as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    pub has_password: bool,
}

/// An API token as listed: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub user: String,
    pub label: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Answer to creating a user: the user and their first API token.
#[derive(Debug, Clone, Deserialize)]
pub struct CreatedUser {
    pub user: User,
    pub token: String,
}

/// Answer to creating a token: its listing and the secret, shown this once.
#[derive(Debug, Clone, Deserialize)]
pub struct CreatedToken {
    pub token: TokenInfo,
    pub secret: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// The server URL for admin commands: `--server` / `TIDINGS_SERVER` if given, else the URL
/// the running server wrote into `<data_dir>/server.json`, else `http://` + `http.listen`.
///
/// `server.json` wins over the config because it is the address the server actually bound
/// (the config may say port 0, or the server may have been started with other flags).
/// An unreadable or garbled `server.json` is reported on stderr and skipped: it is a hint,
/// and a leftover from a crash must not block the fallback.
pub fn resolve_server(flag: Option<&str>, data_dir: &Path, config: &Config) -> String {
    if let Some(url) = flag.map(str::trim).filter(|u| !u.is_empty()) {
        return url.to_owned();
    }
    let path = data_dir.join(SERVER_FILE);
    match read_server_file(&path) {
        Ok(Some(url)) => return url,
        Ok(None) => {}
        Err(reason) => eprintln!("warning: ignoring {}: {reason}", path.display()),
    }
    config::local_url(config.http.listen)
}

fn read_server_file(path: &Path) -> Result<Option<String>, String> {
    #[derive(Deserialize)]
    struct ServerFile {
        url: String,
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.to_string()),
    };
    let file: ServerFile = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let url = file.url.trim();
    if url.is_empty() {
        return Err("empty url".to_owned());
    }
    Ok(Some(url.to_owned()))
}

/// The admin credential: `env_token` (the value of `TIDINGS_ADMIN_TOKEN`) if non-empty,
/// else the trimmed contents of `<data_dir>/admin.token`.
pub fn resolve_admin_token(
    env_token: Option<&str>,
    data_dir: &Path,
) -> Result<String, ClientError> {
    if let Some(token) = env_token.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(token.to_owned());
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => Err(ClientError::NoCredential),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(ClientError::NoCredential),
        // Permission denied and the like: say so, "no credential" would send the operator
        // to start a server that is already running.
        Err(error) => Err(ClientError::Credential { path, error }),
    }
}

/// Client of the admin API.
pub struct AdminClient {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the credential.
        f.debug_struct("AdminClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client of the server at `server` (`http://host:port`, optionally with a path
    /// prefix when behind a reverse proxy) using the admin `token`.
    pub fn new(server: &str, token: String) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            url: server.to_owned(),
            reason,
        };
        let base = Url::parse(server).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("must start with http:// or https://".to_owned()));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(bad("has no host".to_owned()));
        }
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .user_agent(concat!("tidings-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Request {
                url: server.to_owned(),
                detail: error_chain(&e),
            })?;
        Ok(Self { http, base, token })
    }

    /// The server URL, as given.
    pub fn server(&self) -> &str {
        self.base.as_str()
    }

    /// `POST /api/v1/admin/users`.
    pub async fn create_user(
        &self,
        name: &str,
        admin: bool,
        password: Option<&str>,
    ) -> Result<CreatedUser, ClientError> {
        let body = json!({"name": name, "admin": admin, "password": password});
        self.call(Method::POST, &["users"], None, Some(body)).await
    }

    /// `GET /api/v1/admin/users`.
    pub async fn list_users(&self) -> Result<Vec<User>, ClientError> {
        #[derive(Deserialize)]
        struct Users {
            users: Vec<User>,
        }
        let users: Users = self.call(Method::GET, &["users"], None, None).await?;
        Ok(users.users)
    }

    /// `DELETE /api/v1/admin/users/{name}`: the removed user.
    pub async fn remove_user(&self, name: &str) -> Result<User, ClientError> {
        #[derive(Deserialize)]
        struct Removed {
            user: User,
        }
        let removed: Removed = self
            .call(Method::DELETE, &["users", name], None, None)
            .await?;
        Ok(removed.user)
    }

    /// `PUT /api/v1/admin/users/{name}/password`: the user.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<User, ClientError> {
        #[derive(Deserialize)]
        struct Changed {
            user: User,
        }
        let body = json!({ "password": password });
        let changed: Changed = self
            .call(Method::PUT, &["users", name, "password"], None, Some(body))
            .await?;
        Ok(changed.user)
    }

    /// `POST /api/v1/admin/users/{name}/tokens`.
    pub async fn create_token(&self, user: &str, label: &str) -> Result<CreatedToken, ClientError> {
        let body = json!({ "label": label });
        self.call(Method::POST, &["users", user, "tokens"], None, Some(body))
            .await
    }

    /// `GET /api/v1/admin/tokens[?user=NAME]`.
    pub async fn list_tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Tokens {
            tokens: Vec<TokenInfo>,
        }
        let query = user.map(|u| ("user", u));
        let tokens: Tokens = self.call(Method::GET, &["tokens"], query, None).await?;
        Ok(tokens.tokens)
    }

    /// `DELETE /api/v1/admin/tokens/{id}`: the id the server revoked.
    pub async fn revoke_token(&self, id: i64) -> Result<i64, ClientError> {
        #[derive(Deserialize)]
        struct Revoked {
            revoked: i64,
        }
        let revoked: Revoked = self
            .call(Method::DELETE, &["tokens", &id.to_string()], None, None)
            .await?;
        Ok(revoked.revoked)
    }

    /// `/api/v1/admin/<segments…>`, each segment percent-encoded (user names are the
    /// caller's input and must not be able to change the path).
    fn url(&self, segments: &[&str], query: Option<(&str, &str)>) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            // `new` refused URLs that cannot be a base, so this branch always runs.
            path.pop_if_empty()
                .extend(["api", "v1", "admin"])
                .extend(segments);
        }
        if let Some((key, value)) = query {
            url.query_pairs_mut().append_pair(key, value);
        }
        url
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<(&str, &str)>,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let url = self.url(segments, query);
        let mut request = self
            .http
            .request(method, url.clone())
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&url, e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&url, e))?;
        decode(url.as_str(), status, &bytes)
    }

    fn transport_error(&self, url: &Url, err: reqwest::Error) -> ClientError {
        // The message names the server, not the endpoint: that is what the operator
        // configures and what `--server` would change.
        let server = self.base.as_str().trim_end_matches('/').to_owned();
        if err.is_timeout() {
            return ClientError::Timeout { url: server };
        }
        if err.is_connect() {
            let refused = io_error_kind(&err) == Some(io::ErrorKind::ConnectionRefused);
            // reqwest's own top-level text repeats the URL; the causes say what went wrong.
            let detail = match std::error::Error::source(&err) {
                Some(cause) => error_chain(cause),
                None => err.to_string(),
            };
            return ClientError::Unreachable {
                url: server,
                detail: (!refused).then_some(detail),
            };
        }
        ClientError::Request {
            url: url.to_string(),
            detail: error_chain(&err),
        }
    }
}

/// Turns an HTTP answer into `T` or the error it carries.
fn decode<T: DeserializeOwned>(
    url: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<T, ClientError> {
    let unexpected = |detail: String| ClientError::Unexpected {
        url: url.to_owned(),
        status,
        detail,
    };
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|e| unexpected(e.to_string()));
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => Err(ClientError::Api {
            status,
            code: error.code,
            message: error.message,
        }),
        Err(_) => Err(unexpected(snippet(body))),
    }
}

/// The start of a body that is not our JSON, on one line, for an error message.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return "empty body".to_owned();
    }
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The `io::ErrorKind` at the bottom of a reqwest error, if there is one.
fn io_error_kind(err: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        current = e.source();
    }
    None
}

/// "a: b: c" from an error and its sources; reqwest's own Display says only "error
/// sending request", which is useless without the cause.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        // hyper and reqwest sometimes repeat their inner error's text.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        current = e.source();
    }
    out
}

/// Unix milliseconds as RFC 3339 UTC with second precision (`2024-05-01T12:00:00Z`).
pub fn rfc3339_from_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`); avoids a date crate for one table column.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Left-aligned columns separated by two spaces, a header first.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `tidings user list` table: name, admin, created, id.
pub fn users_table(users: &[User]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.name.clone(),
                if u.is_admin { "yes" } else { "no" }.to_owned(),
                rfc3339_from_ms(u.created_at),
                u.id.to_string(),
            ]
        })
        .collect();
    table(&["NAME", "ADMIN", "CREATED", "ID"], &rows)
}

/// The `tidings token list` table: id, user, label, created.
pub fn tokens_table(tokens: &[TokenInfo]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.user.clone(),
                t.label.clone(),
                rfc3339_from_ms(t.created_at),
            ]
        })
        .collect();
    table(&["ID", "USER", "LABEL", "CREATED"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_from_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_from_ms(1_714_564_800_123), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339_from_ms(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339_from_ms(4_102_444_799_000), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn tables() {
        let users = [
            User {
                id: 1,
                name: "admin".into(),
                is_admin: true,
                created_at: 0,
                has_password: false,
            },
            User {
                id: 12,
                name: "alice".into(),
                is_admin: false,
                created_at: 1_714_564_800_000,
                has_password: true,
            },
        ];
        assert_eq!(
            users_table(&users),
            "NAME   ADMIN  CREATED               ID\n\
             admin  yes    1970-01-01T00:00:00Z  1\n\
             alice  no     2024-05-01T12:00:00Z  12\n"
        );
        let tokens = [TokenInfo {
            id: 3,
            user: "alice".into(),
            label: String::new(),
            created_at: 0,
        }];
        assert_eq!(
            tokens_table(&tokens),
            "ID  USER   LABEL  CREATED\n3   alice         1970-01-01T00:00:00Z\n"
        );
    }

    #[test]
    fn decodes_answers_and_errors() {
        let ok: CreatedToken = decode(
            "u",
            StatusCode::CREATED,
            br#"{"token":{"id":5,"user":"alice","label":"ci","created_at":1},"secret":"tk_abc"}"#,
        )
        .unwrap();
        assert_eq!(ok.secret, "tk_abc");
        assert_eq!(ok.token.id, 5);

        let err = decode::<CreatedUser>(
            "u",
            StatusCode::CONFLICT,
            br#"{"error":{"code":"conflict","message":"user \"alice\" exists"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "user \"alice\" exists (conflict, HTTP 409)"
        );

        let err = decode::<CreatedUser>(
            "u",
            StatusCode::BAD_GATEWAY,
            b"<html>\n bad gateway </html>",
        )
        .unwrap_err();
        assert!(matches!(err, ClientError::Unexpected { .. }));
        assert!(
            err.to_string().contains("<html> bad gateway </html>"),
            "{err}"
        );
    }

    #[test]
    fn urls_are_encoded_under_a_prefix() {
        let client = AdminClient::new("http://127.0.0.1:1/prefix/", "t".into()).unwrap();
        assert_eq!(
            client.url(&["users", "a/b c", "tokens"], None).as_str(),
            "http://127.0.0.1:1/prefix/api/v1/admin/users/a%2Fb%20c/tokens"
        );
        let client = AdminClient::new("http://127.0.0.1:1", "t".into()).unwrap();
        assert_eq!(
            client.url(&["tokens"], Some(("user", "bob&x"))).as_str(),
            "http://127.0.0.1:1/api/v1/admin/tokens?user=bob%26x"
        );
        assert!(AdminClient::new("127.0.0.1:8080", "t".into()).is_err());
        assert!(AdminClient::new("ftp://host", "t".into()).is_err());
    }

    #[test]
    fn server_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.http.listen = "0.0.0.0:9999".parse().unwrap();
        assert_eq!(
            resolve_server(None, dir.path(), &config),
            "http://127.0.0.1:9999"
        );
        std::fs::write(
            dir.path().join(SERVER_FILE),
            r#"{"url": "http://127.0.0.1:4321", "pid": 7}"#,
        )
        .unwrap();
        assert_eq!(
            resolve_server(None, dir.path(), &config),
            "http://127.0.0.1:4321"
        );
        assert_eq!(
            resolve_server(Some("https://x.example"), dir.path(), &config),
            "https://x.example"
        );
        std::fs::write(dir.path().join(SERVER_FILE), "{garbled").unwrap();
        assert_eq!(
            resolve_server(None, dir.path(), &config),
            "http://127.0.0.1:9999"
        );
    }

    #[test]
    fn admin_token_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_admin_token(None, dir.path()).unwrap_err();
        assert!(matches!(err, ClientError::NoCredential));
        assert!(err.to_string().contains("TIDINGS_ADMIN_TOKEN"));
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "tk_file\n").unwrap();
        assert_eq!(resolve_admin_token(None, dir.path()).unwrap(), "tk_file");
        assert_eq!(
            resolve_admin_token(Some(" tk_env "), dir.path()).unwrap(),
            "tk_env"
        );
        assert_eq!(
            resolve_admin_token(Some(""), dir.path()).unwrap(),
            "tk_file"
        );
    }

    #[tokio::test]
    async fn refused_connection_names_the_server() {
        // Bind then drop a listener to get a port that refuses connections.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let server = format!("http://127.0.0.1:{port}");
        let client = AdminClient::new(&server, "t".into()).unwrap();
        let err = client.list_users().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot reach the tidings server at {server}: is `tidings serve` running?")
        );
    }

    #[tokio::test]
    async fn speaks_the_admin_api() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        // A one-shot HTTP server that records the request and answers with a canned body.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let peer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the end of the headers plus the announced body.
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let body = r#"{"user":{"id":2,"name":"alice","is_admin":false,"created_at":0,"has_password":true},"token":"tk_new"}"#;
            let answer = format!(
                "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        let client = AdminClient::new(&server, "tk_admin".into()).unwrap();
        let created = client
            .create_user("alice", false, Some("pw"))
            .await
            .unwrap();
        assert_eq!(created.token, "tk_new");
        assert!(created.user.has_password);
        let request = peer.await.unwrap();
        assert!(
            request.starts_with("POST /api/v1/admin/users HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer tk_admin"),
            "{request}"
        );
        let body = request.split("\r\n\r\n").nth(1).unwrap();
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            body,
            json!({"name": "alice", "admin": false, "password": "pw"})
        );
    }
}
