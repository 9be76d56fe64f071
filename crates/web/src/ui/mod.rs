//! The web interface: server-rendered HTML pages for people, served by the same binary at
//! `/`. Sign-in with a password (`/login`), the inbox (`/`), destinations
//! (`/app/destinations`), sources (`/app/sources`) and API tokens (`/settings`).
//!
//! Every page is built by plain string formatting where every piece of user or publisher
//! text goes through [`esc`]: notifications are plain text, so everything is escaped and
//! nothing is "sanitized". Progressive enhancement is one static script (`/static/app.js`,
//! no inline script anywhere) that opens the live stream and acks without a reload; every
//! action also works as a plain form post. Forms carry a CSRF token: the login form one bound
//! to a pre-session cookie, every other form one derived from the session id. The pages only
//! call the same handlers and avatars as the REST API; they own no data.
//!
//! Not here: the REST API itself, and the session store (the directory owns sessions).

pub mod destinations;
pub mod inbox;
pub mod settings;
pub mod sources;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tidings_routing::directory::User;

use crate::AppState;
use crate::auth::{Authed, SESSION_COOKIE};
use crate::error::ApiError;

/// Name of the cookie that binds the login form's CSRF token before there is a session.
pub const PRESESSION_COOKIE: &str = "tidings_presession";
/// Name of the hidden form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// The Content-Security-Policy of every page: scripts, styles and images from this origin only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Largest form body a page accepts.
const MAX_FORM: usize = 64 * 1024;
/// Lifetime of a session cookie, seconds.
const SESSION_AGE: i64 = 30 * 24 * 3600;

const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");
/// Cache-busting query of static URLs: assets change only with the binary.
const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Adds the security headers every page and asset carries.
fn secure_headers(h: &mut HeaderMap) {
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
}

/// An HTML response with the security headers; never cached (pages show private data).
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure_headers(h);
    r
}

/// A 303 See Other to `to` (after a form post, so a reload does not post again).
pub fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(r.headers_mut());
    r
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure when the public URL is https.
fn cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.cfg().base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The value of cookie `name`, if sent.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    for c in headers.get_all(header::COOKIE) {
        let Ok(c) = c.to_str() else { continue };
        for part in c.split(';') {
            if let Some(v) = part
                .trim()
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('='))
            {
                return Some(v.to_owned());
            }
        }
    }
    None
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The CSRF token of a session: a hash of the session id, so it needs no storage and
/// dies with the session. A page from another origin can neither read it nor compute it.
fn session_csrf(sid: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tidings web csrf\0");
    h.update(sid.as_bytes());
    hex::encode(&h.finalize()[..16])
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A signed-in person: the user, and the CSRF token their forms carry.
pub struct Session {
    pub user: User,
    pub sid: String,
    pub csrf: String,
}

/// The session of a request, from its session cookie only (pages do not take API tokens:
/// their forms rely on the cookie-bound CSRF token).
pub fn session(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let sid = cookie_value(headers, SESSION_COOKIE)?;
    if sid.is_empty() {
        return None;
    }
    let user = state.services().directory.authenticate_session(&sid)?;
    Some(Session {
        user,
        csrf: session_csrf(&sid),
        sid,
    })
}

impl Session {
    pub fn authed(&self) -> Authed {
        Authed {
            user: self.user.clone(),
        }
    }
}

/// A form post refused: no session (to the login page), or a missing or wrong CSRF token.
fn forbidden(msg: &str) -> Response {
    html(
        StatusCode::FORBIDDEN,
        bare_page(
            "Refused",
            &format!(
                "<h1>Refused</h1><p role=\"alert\">{}</p><p><a href=\"/\">Back to the inbox</a></p>",
                esc(msg)
            ),
        ),
    )
}

/// A browser's `Origin`, when sent, must be this server (a second line behind the token).
fn origin_ok(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let o = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && o.eq_ignore_ascii_case(host)
}

/// Reads a posted form (`application/x-www-form-urlencoded`).
async fn read_form(body: Body) -> Result<HashMap<String, String>, Response> {
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
        html(
            StatusCode::PAYLOAD_TOO_LARGE,
            bare_page("Too large", "<h1>That form is too large</h1>"),
        )
    })?;
    Ok(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

/// A signed-in form post: the session, its CSRF token checked, and the form fields.
pub async fn session_form(
    state: &AppState,
    req: Request,
) -> Result<(Session, HashMap<String, String>), Response> {
    let (parts, body) = req.into_parts();
    let Some(s) = session(state, &parts.headers) else {
        return Err(see_other("/login"));
    };
    if !origin_ok(&parts.headers) {
        return Err(forbidden("This form was posted from another site."));
    }
    let form = read_form(body).await?;
    match form.get(CSRF_FIELD) {
        Some(t) if same(t, &s.csrf) => Ok((s, form)),
        _ => Err(forbidden(
            "This form has no valid security token. Reload the page and try again.",
        )),
    }
}

/// The hidden CSRF field of a form.
pub fn csrf_input(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">",
        esc(token)
    )
}

fn head(title: &str, csrf: Option<&str>) -> String {
    let meta = csrf
        .map(|t| format!("<meta name=\"csrf-token\" content=\"{}\">", esc(t)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · tidings</title>{meta}\
         <link rel=\"stylesheet\" href=\"/static/app.css?v={ASSET_VERSION}\">\
         <script src=\"/static/app.js?v={ASSET_VERSION}\" defer></script></head>",
        esc(title)
    )
}

/// A page without the signed-in navigation (login, errors).
pub fn bare_page(title: &str, main: &str) -> String {
    format!(
        "{}<body><main id=\"main\" class=\"narrow\">{main}</main></body></html>",
        head(title, None)
    )
}

/// Which navigation entry is the current page.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum Nav {
    Inbox,
    Destinations,
    Sources,
    Settings,
}

/// A signed-in page: skip link, navigation, sign-out, then `main`.
pub fn page(s: &Session, nav: Nav, title: &str, main: &str) -> String {
    let link = |n: Nav, href: &str, label: &str| {
        let cur = if n == nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<li><a href=\"{href}\"{cur}>{label}</a></li>")
    };
    format!(
        "{}<body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header class=\"top\"><nav aria-label=\"Main\"><ul>\
         <li class=\"brand\">tidings</li>{}{}{}{}</ul></nav>\
         <form class=\"signout\" method=\"post\" action=\"/logout\">{}\
         <span class=\"who\">{}</span> <button type=\"submit\">Sign out</button></form></header>\
         <main id=\"main\" tabindex=\"-1\">{main}</main></body></html>",
        head(title, Some(&s.csrf)),
        link(Nav::Inbox, "/", "Inbox"),
        link(Nav::Destinations, "/app/destinations", "Destinations"),
        link(Nav::Sources, "/app/sources", "Sources"),
        link(Nav::Settings, "/settings", "Settings"),
        csrf_input(&s.csrf),
        esc(&s.user.name),
    )
}

/// An error from an API handler, as a line of a page.
pub fn error_line(e: &ApiError) -> String {
    format!("<p class=\"error\" role=\"alert\">{}</p>", esc(&e.message))
}

fn login_page(csrf: &str, name: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default();
    let described = if error.is_empty() {
        ""
    } else {
        " aria-describedby=\"login-error\""
    };
    bare_page(
        "Sign in",
        &format!(
            "<h1>Sign in to tidings</h1>{error}\
             <form method=\"post\" action=\"/login\" class=\"stack\">{}\
             <label for=\"name\">User name</label>\
             <input id=\"name\" name=\"name\" autocomplete=\"username\" required value=\"{}\"{described}>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form>\
             <p class=\"hint\">No password yet? Use the one-time sign-in link <code>tidings serve</code> \
             printed at first start.</p>",
            csrf_input(csrf),
            esc(name)
        ),
    )
}

/// The pre-session CSRF token of a request, and whether it is new (needs a cookie).
fn presession(headers: &HeaderMap) -> (String, bool) {
    match cookie_value(headers, PRESESSION_COOKIE) {
        Some(t) if t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) => (t, false),
        _ => (random_hex(16), true),
    }
}

/// `GET /login`: the sign-in form (or the inbox, when already signed in).
pub async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if session(&state, &headers).is_some() {
        return see_other("/");
    }
    let (token, new) = presession(&headers);
    let mut r = html(StatusCode::OK, login_page(&token, "", None));
    if new {
        r.headers_mut().append(
            header::SET_COOKIE,
            cookie(&state, PRESESSION_COOKIE, &token, 3600),
        );
    }
    r
}

/// `POST /login`: checks the CSRF token, the rate limits (per name and per address), then
/// the password; opens a session and goes to the inbox.
pub async fn login_submit(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (token, new) = presession(&parts.headers);
    if new || !origin_ok(&parts.headers) {
        return forbidden(
            "The sign-in form expired or came from another site. Reload it and try again.",
        );
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if !form.get(CSRF_FIELD).is_some_and(|t| same(t, &token)) {
        return forbidden("The sign-in form expired. Reload it and try again.");
    }
    let name = form.get("name").map(|s| s.trim()).unwrap_or("").to_owned();
    let password = form.get("password").cloned().unwrap_or_default();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    // Before any argon2 work: the same buckets as the JSON login, plus one per address.
    let limited = state
        .limiter()
        .check(&format!("p:{name}"))
        .and_then(|()| state.limiter().check(&format!("login:{peer}")));
    if let Err(e) = limited {
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            login_page(
                &token,
                &name,
                Some("Too many sign-in attempts. Wait a moment and try again."),
            ),
        );
        if let Some(s) = e.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let dir = &state.services().directory;
    let user = match dir.verify_password(&name, password).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return html(
                StatusCode::UNAUTHORIZED,
                login_page(&token, &name, Some("Wrong user name or password.")),
            );
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let sid = match dir.create_session(user.id).await {
        Ok(s) => s,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut r = see_other("/");
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        cookie(&state, SESSION_COOKIE, &sid, SESSION_AGE),
    );
    // A new session gets a new pre-session token next time.
    h.append(header::SET_COOKIE, cookie(&state, PRESESSION_COOKIE, "", 0));
    r
}

/// `POST /logout`: ends the session (CSRF-checked, so another site cannot sign you out).
pub async fn logout(State(state): State<AppState>, req: Request) -> Response {
    let (s, _) = match session_form(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(e) = state.services().directory.end_session(&s.sid).await {
        return ApiError::from(e).into_response();
    }
    let mut r = see_other("/login");
    r.headers_mut()
        .append(header::SET_COOKIE, cookie(&state, SESSION_COOKIE, "", 0));
    r
}

/// `GET /static/{file}`: the stylesheet and the script, compiled into the binary.
pub async fn static_file(Path(file): Path<String>) -> Response {
    let (body, ty) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return ApiError::not_found("no such file").into_response(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    // URLs carry the version, so a day is safe; a new binary changes the URL.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    secure_headers(h);
    r
}

/// Unix seconds as `2026-11-27T01:52:08Z`.
pub fn iso_time(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// "3 min ago" for a time `ago` seconds in the past.
pub fn relative(ago: i64) -> String {
    match ago {
        i64::MIN..=44 => "just now".into(),
        45..=5399 => format!("{} min ago", ((ago + 30) / 60).max(1)),
        5400..=129_599 => format!("{} h ago", (ago + 1800) / 3600),
        _ => format!("{} days ago", (ago + 43200) / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            esc("<img src=x onerror='a(\"1\")'>&"),
            "&lt;img src=x onerror=&#39;a(&quot;1&quot;)&#39;&gt;&amp;"
        );
    }

    #[test]
    fn times() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(1_795_744_328), "2026-11-27T01:52:08Z");
        assert_eq!(iso_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(relative(10), "just now");
        assert_eq!(relative(180), "3 min ago");
        assert_eq!(relative(7200), "2 h ago");
        assert_eq!(relative(3 * 86400), "3 days ago");
    }

    #[test]
    fn csrf_tokens_and_origins() {
        assert_eq!(session_csrf("a"), session_csrf("a"));
        assert_ne!(session_csrf("a"), session_csrf("b"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("ab", "abc"));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(origin_ok(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(origin_ok(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_ok(&h));
    }
}
