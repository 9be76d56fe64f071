//! The web interface over real HTTP, as a browser without JavaScript sees it: sign-in with
//! a password, CSRF refusals, the login rate limit, security headers, escaping of hostile
//! notifications, destinations and tokens through forms, sign-out. (The live parts, with a
//! real Chromium, are in `tests/browser/ui.mjs`, run by `scripts/test`.)

mod common;

use common::*;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

/// A client that does not follow redirects (the tests look at them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `name=value` of the Set-Cookie for `name`, with its attributes.
fn set_cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// The value of the first hidden CSRF field of a page.
fn csrf_of(page: &str) -> String {
    let i = page
        .find("name=\"csrf\" value=\"")
        .expect("no CSRF field on the page");
    let rest = &page[i + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn assert_security_headers(h: &HeaderMap) {
    assert_eq!(
        h["content-security-policy"],
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
}

async fn create_user_with_password(s: &Server, name: &str, password: &str) -> String {
    let r = client()
        .post(format!("{}/api/v1/admin/users", s.url))
        .bearer_auth(&s.admin_token)
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// The login form: its pre-session cookie (`name=value`) and CSRF token.
async fn login_form(s: &Server) -> (String, String) {
    let r = browser()
        .get(format!("{}/login", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_security_headers(r.headers());
    let c = set_cookie(r.headers(), "tidings_presession").expect("pre-session cookie");
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");
    assert!(
        !c.contains("Secure"),
        "plain http: no Secure attribute: {c}"
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("<label for=\"password\">"), "labelled fields");
    (cookie_pair(&c), csrf_of(&page))
}

/// Signs in through the form; returns the session cookie (`name=value`).
async fn sign_in(s: &Server, name: &str, password: &str) -> String {
    let (pre, csrf) = login_form(s).await;
    let r = browser()
        .post(format!("{}/login", s.url))
        .header("cookie", &pre)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", name),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/");
    let c = set_cookie(r.headers(), "tidings_session").expect("session cookie");
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");
    cookie_pair(&c)
}

async fn get_page(s: &Server, path: &str, cookie: &str) -> (u16, String) {
    let r = browser()
        .get(format!("{}{path}", s.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        assert_security_headers(r.headers());
    }
    (status, r.text().await.unwrap())
}

async fn post_form(
    s: &Server,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    browser()
        .post(format!("{}{path}", s.url))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn password_sign_in_csrf_tokens_and_sign_out() {
    let s = Server::start();
    create_user_with_password(&s, "alice", "correct horse").await;

    // Not signed in: the inbox sends you to the login page.
    let r = browser().get(format!("{}/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/login");

    let (pre, csrf) = login_form(&s).await;
    // No token, a wrong token, no pre-session cookie: refused before the password is looked at.
    for (cookie, form) in [
        (
            pre.as_str(),
            vec![("name", "alice"), ("password", "correct horse")],
        ),
        (
            pre.as_str(),
            vec![
                ("csrf", "0123456789abcdef0123456789abcdef"),
                ("name", "alice"),
                ("password", "correct horse"),
            ],
        ),
        (
            "",
            vec![
                ("csrf", csrf.as_str()),
                ("name", "alice"),
                ("password", "correct horse"),
            ],
        ),
    ] {
        let r = post_form(&s, "/login", cookie, &form).await;
        assert_eq!(r.status(), 403);
        assert!(set_cookie(r.headers(), "tidings_session").is_none());
    }
    // A form posted from another origin is refused even with the token.
    let r = browser()
        .post(format!("{}/login", s.url))
        .header("cookie", &pre)
        .header("origin", "https://evil.example")
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "alice"),
            ("password", "correct horse"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Wrong password: the form again, with the message and the name kept.
    let r = post_form(
        &s,
        "/login",
        &pre,
        &[
            ("csrf", &csrf),
            ("name", "alice"),
            ("password", "wrong-password"),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(r.headers(), "tidings_session").is_none());
    let page = r.text().await.unwrap();
    assert!(page.contains("Wrong user name or password"), "{page}");
    assert!(page.contains("value=\"alice\""));

    let session = sign_in(&s, "alice", "correct horse").await;
    let (status, inbox) = get_page(&s, "/", &session).await;
    assert_eq!(status, 200);
    assert!(inbox.contains("<h1>Inbox</h1>") && inbox.contains("alice"));
    // The login page of a signed-in user is the inbox.
    let (status, _) = get_page(&s, "/login", &session).await;
    assert_eq!(status, 303);

    // A session cookie alone is not enough for a form: a missing or foreign token is a 403.
    let r = post_form(&s, "/settings/tokens", &session, &[("label", "laptop")]).await;
    assert_eq!(r.status(), 403);
    let r = post_form(
        &s,
        "/settings/tokens",
        &session,
        &[("csrf", &csrf), ("label", "laptop")],
    )
    .await;
    assert_eq!(
        r.status(),
        403,
        "the pre-session token is not a session token"
    );

    // Tokens: created with a name and shown once, listed without the secret, revoked.
    let token_csrf = csrf_of(&inbox);
    let r = post_form(
        &s,
        "/settings/tokens",
        &session,
        &[("csrf", &token_csrf), ("label", "laptop <b>")],
    )
    .await;
    assert_eq!(r.status(), 201);
    let page = r.text().await.unwrap();
    let i = page
        .find("id=\"new-token\">")
        .expect("the new secret is shown");
    let secret = &page[i + "id=\"new-token\">".len()..];
    let secret = &secret[..secret.find('<').unwrap()];
    assert!(secret.starts_with("tk_"), "{secret}");
    assert!(page.contains("laptop &lt;b&gt;") && !page.contains("laptop <b>"));
    let (s200, v) = get_json(&format!("{}/api/v1/account", s.url), secret).await;
    assert_eq!(s200, 200, "the new token works: {v}");
    let (_, settings) = get_page(&s, "/settings", &session).await;
    assert!(!settings.contains(secret), "the secret is shown once only");
    let (_, tokens) = get_json(&format!("{}/api/v1/tokens", s.url), secret).await;
    let id = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "laptop <b>")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = post_form(
        &s,
        &format!("/settings/tokens/{id}/revoke"),
        &session,
        &[("csrf", &token_csrf)],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (s401, _) = get_json(&format!("{}/api/v1/account", s.url), secret).await;
    assert_eq!(s401, 401, "revoked");

    // Sign out needs the token too, then the session is gone.
    let r = post_form(&s, "/logout", &session, &[]).await;
    assert_eq!(r.status(), 403);
    let r = post_form(&s, "/logout", &session, &[("csrf", &token_csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/login");
    let cleared = set_cookie(r.headers(), "tidings_session").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (status, _) = get_page(&s, "/", &session).await;
    assert_eq!(status, 303, "the old session cookie no longer signs in");
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let s = Server::start_with(&[
        ("TIDINGS_HTTP_RATE_LIMIT_PER_SECOND", "0.01"),
        ("TIDINGS_HTTP_RATE_LIMIT_BURST", "3"),
    ]);
    create_user_with_password(&s, "bob", "right-password").await;
    let (pre, csrf) = login_form(&s).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = post_form(
            &s,
            "/login",
            &pre,
            &[
                ("csrf", &csrf),
                ("name", "bob"),
                ("password", "guess-password"),
            ],
        )
        .await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // Even the right password waits now.
    let r = post_form(
        &s,
        "/login",
        &pre,
        &[
            ("csrf", &csrf),
            ("name", "bob"),
            ("password", "right-password"),
        ],
    )
    .await;
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn hostile_notifications_are_escaped_and_links_are_web_only() {
    let s = Server::start();
    let token = create_user_with_password(&s, "carol", "carol-password").await;
    let r = client()
        .post(format!("{}/hostile", s.url))
        .bearer_auth(&token)
        .header("Title", "<script>alert(1)</script>")
        .header("Tags", "<b>x</b>")
        .body("<img src=x onerror=alert(1)>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = client()
        .post(format!("{}/hostile", s.url))
        .bearer_auth(&token)
        .header("Priority", "urgent")
        .header("Click", "https://example.org/a?b=1&c=\"2\"")
        .body("\"><svg onload=alert(2)> ' onmouseover='alert(3)")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(10, || async {
        (history(&s.url, &token).await.len() == 2).then_some(())
    })
    .await;

    let session = sign_in(&s, "carol", "carol-password").await;
    let (status, page) = get_page(&s, "/", &session).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(page.contains("&quot;&gt;&lt;svg onload=alert(2)&gt; &#39; onmouseover=&#39;alert(3)"));
    assert!(page.contains("&lt;b&gt;x&lt;/b&gt;"));
    assert!(!page.contains("<img") && !page.contains("<svg") && !page.contains("<b>"));
    assert_eq!(
        page.matches("<script").count(),
        1,
        "only the page's own script tag"
    );
    assert!(page.contains("<script src=\"/static/app.js"));
    assert!(
        !page.contains("javascript:"),
        "a javascript: click URL is not a link"
    );
    assert!(page.contains("href=\"https://example.org/a?b=1&amp;c=&quot;2&quot;\""));
    assert!(
        page.contains("<span class=\"prio p5\""),
        "priority at a glance"
    );
    assert!(
        page.contains("<time datetime=\"20"),
        "machine-readable time"
    );
    // Newest first.
    assert!(page.find("svg onload").unwrap() < page.find("script&gt;alert(1)").unwrap());

    // Ack by form: redirect back, then shown as acknowledged.
    let items = history(&s.url, &token).await;
    let id = items[0]["id"].as_str().unwrap().to_owned();
    let r = post_form(&s, &format!("/app/ack/{id}"), &session, &[]).await;
    assert_eq!(r.status(), 403, "ack without the CSRF token");
    let csrf = csrf_of(&page);
    let r = post_form(&s, &format!("/app/ack/{id}"), &session, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    let items = history(&s.url, &token).await;
    assert_eq!(items[0]["acked"], true);
    // The script's way: JSON back.
    let other = items[1]["id"].as_str().unwrap().to_owned();
    let r = browser()
        .post(format!("{}/app/ack/{other}", s.url))
        .header("cookie", &session)
        .header("accept", "application/json")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["acked"], true);

    // Static assets: served with a content type, cache headers and nosniff.
    let r = browser()
        .get(format!("{}/static/app.js", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn destinations_by_form_with_the_api_checks() {
    let s = Server::start_with(&[("TIDINGS_DELIVERY_ALLOW_PRIVATE_NETWORKS", "true")]);
    let token = create_user_with_password(&s, "dave", "dave-password").await;
    let session = sign_in(&s, "dave", "dave-password").await;
    let (status, page) = get_page(&s, "/app/destinations", &session).await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);
    assert!(page.contains("<label for=\"dest-url\">"));

    // Refused like the API refuses, with the reason on the page and the input kept (escaped).
    let r = post_form(
        &s,
        "/app/destinations",
        &session,
        &[("csrf", &csrf), ("name", "bad"), ("url", "nope://<x>")],
    )
    .await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains("role=\"alert\""));
    assert!(page.contains("value=\"nope://&lt;x&gt;\"") && !page.contains("<x>"));

    let r = post_form(
        &s,
        "/app/destinations",
        &session,
        &[
            ("csrf", &csrf),
            ("name", "hook"),
            ("url", "json://127.0.0.1:9/hook"),
        ],
    )
    .await;
    assert_eq!(r.status(), 201);
    let page = r.text().await.unwrap();
    assert!(page.contains("Added hook"), "{page}");
    let (_, v) = get_json(&format!("{}/api/v1/destinations", s.url), &token).await;
    let list = v["destinations"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["kind"], "webhook");
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let (_, page) = get_page(&s, "/app/destinations", &session).await;
    assert!(page.contains("127.0.0.1:9/hook"));

    let r = post_form(&s, &format!("/app/destinations/{id}/delete"), &session, &[]).await;
    assert_eq!(r.status(), 403);
    let r = post_form(
        &s,
        &format!("/app/destinations/{id}/delete"),
        &session,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, v) = get_json(&format!("{}/api/v1/destinations", s.url), &token).await;
    assert_eq!(v["destinations"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn secure_cookies_when_served_over_https() {
    // A public https URL (a TLS proxy in front): the port is chosen here so the test can
    // still reach the plain listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let s = Server::start_with(&[
        ("TIDINGS_HTTP_LISTEN", listen.as_str()),
        ("TIDINGS_BASE_URL", "https://tidings.example.org"),
    ]);
    let r = browser()
        .get(format!("http://{listen}/login"))
        .send()
        .await
        .unwrap();
    let c = set_cookie(r.headers(), "tidings_presession").unwrap();
    assert!(c.contains("; Secure"), "{c}");
    drop(s);
}

/// A local site: an RSS feed at `/feed.xml` (one item with a hostile title) and a page.
async fn feed_site() -> String {
    const RSS: &str = r#"<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>
<item><guid>1</guid><title>Rust 9.0 released</title><description>Fast and safe.</description><link>https://example.org/1</link></item>
<item><guid>2</guid><title>Gardening tips</title><description>Tomatoes.</description></item>
<item><guid>3</guid><title>&lt;script&gt;alert(1)&lt;/script&gt; rust &lt;img src=x onerror=alert(2)&gt;</title><description>x</description></item>
</channel></rss>"#;
    let app = axum::Router::new()
        .route(
            "/feed.xml",
            axum::routing::get(|| async { ([("content-type", "application/rss+xml")], RSS) }),
        )
        .route(
            "/page",
            axum::routing::get(|| async {
                (
                    [("content-type", "text/html")],
                    "<html><body><ul class=\"news\"><li>Rust meetup</li><li>Bake sale</li></ul></body></html>",
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    base
}

#[tokio::test]
async fn sources_page_previews_subscribes_edits_and_removes() {
    let s = Server::start_with(&[("TIDINGS_SOURCES_ALLOW_PRIVATE_NETWORKS", "true")]);
    let site = feed_site().await;
    let feed = format!("{site}/feed.xml");
    let token = create_user_with_password(&s, "erin", "erin-password").await;
    let session = sign_in(&s, "erin", "erin-password").await;
    let (status, page) = get_page(&s, "/app/sources", &session).await;
    assert_eq!(status, 200);
    assert!(page.contains("href=\"/app/sources\" aria-current=\"page\">Sources"));
    assert!(page.contains("No subscriptions yet"));
    assert!(
        page.contains("Mail in is not enabled"),
        "no mail domain here"
    );
    assert!(!page.contains("<script>") && !page.contains("style="));
    let csrf = csrf_of(&page);

    // Preview: the feed's current items, those with "rust" marked, hostile titles escaped.
    let r = post_form(
        &s,
        "/app/sources",
        &session,
        &[
            ("csrf", &csrf),
            ("url", &feed),
            ("selector", ""),
            ("include", "rust"),
            ("exclude", ""),
            ("action", "preview"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("2 of 3 current items"), "{page}");
    assert!(page.contains("<li class=\"match\"><span class=\"mark\">would notify</span> <strong>Rust 9.0 released</strong>"), "{page}");
    assert!(page.contains("<li class=\"nomatch\"><span class=\"mark\">filtered out</span> <strong>Gardening tips</strong>"));
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert") && !page.contains("<img src=x"));
    assert!(
        page.contains(&format!("value=\"{feed}\"")),
        "the form is kept"
    );
    // A page watch previews too.
    let r = post_form(
        &s,
        "/app/sources",
        &session,
        &[
            ("csrf", &csrf),
            ("url", &format!("{site}/page")),
            ("selector", ".news li"),
            ("include", ""),
            ("exclude", "bake"),
            ("action", "preview"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("1 of 2 current items"), "{page}");
    // Nothing was subscribed by previewing; an unreachable URL is an error on the page.
    let (_, v) = get_json(&format!("{}/api/v1/subscriptions", s.url), &token).await;
    assert_eq!(v["subscriptions"].as_array().unwrap().len(), 0);
    let r = post_form(
        &s,
        "/app/sources",
        &session,
        &[
            ("csrf", &csrf),
            ("url", "http://127.0.0.1:9/nothing"),
            ("action", "preview"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("role=\"alert\""));

    // Subscribe: the same path as the API; the list shows it with its health.
    let r = post_form(
        &s,
        "/app/sources",
        &session,
        &[
            ("csrf", &csrf),
            ("url", &feed),
            ("selector", ""),
            ("include", "rust, release"),
            ("exclude", "python"),
            ("action", "subscribe"),
        ],
    )
    .await;
    assert_eq!(r.status(), 201);
    let page = r.text().await.unwrap();
    assert!(page.contains("Subscribed to"), "{page}");
    let (_, v) = get_json(&format!("{}/api/v1/subscriptions", s.url), &token).await;
    let subs = v["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["filter"]["include"], json!(["rust", "release"]));
    let id = subs[0]["id"].as_str().unwrap().to_owned();
    let page = eventually(10, || {
        let s = &s;
        let session = &session;
        async move {
            let (_, page) = get_page(s, "/app/sources", session).await;
            page.contains("Status: <strong>ok</strong>").then_some(page)
        }
    })
    .await;
    assert!(page.contains(&feed) && page.contains("with rust, release; without python"));
    assert!(
        page.contains("last fetch 20") && page.contains("next poll 20"),
        "{page}"
    );

    // Change the filter: subscribing again to the same source replaces it.
    let r = post_form(
        &s,
        &format!("/app/sources/{id}/filter"),
        &session,
        &[("csrf", &csrf), ("include", "gardening"), ("exclude", "")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, v) = get_json(&format!("{}/api/v1/subscriptions", s.url), &token).await;
    let subs = v["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["filter"]["include"], json!(["gardening"]));
    assert!(subs[0]["filter"].get("exclude").is_none());

    // Remove.
    let r = post_form(
        &s,
        &format!("/app/sources/{id}/delete"),
        &session,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, v) = get_json(&format!("{}/api/v1/subscriptions", s.url), &token).await;
    assert_eq!(v["subscriptions"].as_array().unwrap().len(), 0);

    // A topic: claimed and subscribed, with the curl line (base URL, never a token).
    let r = post_form(
        &s,
        "/app/sources/topic",
        &session,
        &[("csrf", &csrf), ("topic", "backups")],
    )
    .await;
    assert_eq!(r.status(), 201);
    let page = r.text().await.unwrap();
    assert!(
        page.contains(&format!(
            "curl -H \"Authorization: Bearer &lt;your token&gt;\" -d \"message\" {}/backups",
            s.url
        )),
        "{page}"
    );
    assert!(!page.contains(&token));
    let (_, v) = get_json(&format!("{}/api/v1/topics", s.url), &token).await;
    assert_eq!(v["owned"][0]["name"], "backups");
    // A bad topic name: the API's error on the page, the input kept escaped.
    let r = post_form(
        &s,
        "/app/sources/topic",
        &session,
        &[("csrf", &csrf), ("topic", "<bad>")],
    )
    .await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains("value=\"&lt;bad&gt;\"") && !page.contains("<bad>"));
    // Without the CSRF token: refused.
    let r = post_form(&s, "/app/sources/topic", &session, &[("topic", "x")]).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn sources_page_shows_the_mail_addresses_when_mail_in_is_on() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Server::start_with(&[
        ("TIDINGS_SMTP_MAIL_DOMAIN", "tidings.test"),
        ("TIDINGS_SMTP_LISTEN", &format!("127.0.0.1:{port}")),
    ]);
    create_user_with_password(&s, "frank", "frank-password").await;
    let session = sign_in(&s, "frank", "frank-password").await;
    let (status, page) = get_page(&s, "/app/sources", &session).await;
    assert_eq!(status, 200);
    assert!(page.contains("<code>frank@tidings.test</code>"), "{page}");
    assert!(page.contains("<code>frank+label@tidings.test</code>"));
    assert!(!page.contains("Mail in is not enabled"));
}
