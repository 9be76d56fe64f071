//! The HTTP fetcher every web source uses: one `GET` with the safety rules applied. It
//! refuses loopback, private, link-local, CGNAT, multicast and other non-public addresses
//! (judged on the resolved address at connect time, and on IP literals in the URL and in
//! every redirect hop) unless the operator allows them; caps the body after decompression;
//! bounds connect and total time; follows at most `max_redirects` redirects and records
//! each hop; limits concurrent requests per host; sends conditional-GET headers; and reads
//! the caching and WebSub headers the poller acts on. It does not decide anything: non-2xx
//! statuses come back as responses (410, 429, 503 are the caller's to handle), and it keeps
//! no state between fetches beyond the connection pool and the per-host slots.

mod guard;
mod headers;
mod hostlimit;
mod resolve;

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use url::{Host, Url};

pub use guard::forbidden_reason;
/// An address range for [`FetchConfig::allowlist`], e.g. `"10.0.0.0/8".parse()`.
pub use ipnet::IpNet;

use guard::AddressPolicy;
use hostlimit::HostLimiter;
use resolve::{GuardedResolver, resolve_allowed};

/// Ends every refusal, so the user learns it is a policy and who can change it.
const OPERATOR_HINT: &str =
    "the operator can allow private networks (allow_private_networks) or allowlist the address";

/// `Accept` for feeds: feed types first, generic XML/JSON after, anything last (some
/// servers send feeds as text/html and would answer 406 otherwise).
pub const ACCEPT_FEED: &str = "application/atom+xml, application/rss+xml, application/feed+json, application/rdf+xml;q=0.9, application/xml;q=0.8, text/xml;q=0.8, application/json;q=0.7, */*;q=0.5";
/// `Accept` for web pages.
pub const ACCEPT_HTML: &str = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5";

#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Allow every address, private or not (a home server fetching its own LAN).
    pub allow_private_networks: bool,
    /// Ranges allowed even though they are not public.
    pub allowlist: Vec<IpNet>,
    /// Largest body accepted, counted after decompression.
    pub max_body_bytes: usize,
    pub connect_timeout: Duration,
    /// For the whole fetch: waiting for a per-host slot, every redirect hop and the body.
    pub total_timeout: Duration,
    pub max_redirects: usize,
    pub per_host_concurrency: usize,
    pub user_agent: String,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            allowlist: Vec::new(),
            max_body_bytes: 10 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            max_redirects: 5,
            per_host_concurrency: 2,
            user_agent: concat!(
                "tidings/",
                env!("CARGO_PKG_VERSION"),
                " (+https://example.invalid/tidings)"
            )
            .to_string(),
        }
    }
}

/// One fetch. `etag` and `last_modified` are the validators from the previous response.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// [`ACCEPT_FEED`], [`ACCEPT_HTML`] or another `Accept` value.
    pub accept: &'static str,
}

impl FetchRequest {
    pub fn feed(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            etag: None,
            last_modified: None,
            accept: ACCEPT_FEED,
        }
    }

    pub fn html(url: impl Into<String>) -> Self {
        Self {
            accept: ACCEPT_HTML,
            ..Self::feed(url)
        }
    }
}

#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// The final response's status, whatever it is (2xx, 304, 4xx, 5xx, or a 3xx that was
    /// not followed because it had no `Location`).
    pub status: u16,
    pub final_url: String,
    /// Each followed redirect: its status and the absolute URL it pointed to.
    pub redirects: Vec<(u16, String)>,
    /// The server answered 304 to our validators; `body` is empty and the validators may be
    /// absent (keep the stored ones).
    pub not_modified: bool,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_type: Option<String>,
    pub content_location: Option<String>,
    pub cache_control_max_age: Option<u64>,
    pub expires: Option<SystemTime>,
    /// From `Retry-After` (seconds or an HTTP-date, made relative to when it was read).
    pub retry_after: Option<Duration>,
    /// `Link: <…>; rel="hub"` targets, absolute.
    pub link_hub: Vec<String>,
    /// The first `Link: <…>; rel="self"` target, absolute.
    pub link_self: Option<String>,
    /// Decompressed, at most `max_body_bytes`.
    pub body: Vec<u8>,
}

impl FetchResponse {
    /// The URL to store from now on, if the fetch went through permanent redirects (301,
    /// 308): the target of the last hop of the leading run of permanent ones, since a
    /// temporary hop after them says nothing permanent about its own target.
    pub fn permanent_redirect(&self) -> Option<&str> {
        self.redirects
            .iter()
            .take_while(|(status, _)| matches!(status, 301 | 308))
            .last()
            .map(|(_, url)| url.as_str())
    }
}

/// How much of a reply's body [`Fetcher::request`] keeps.
pub const REPLY_BODY_LIMIT: usize = 64 * 1024;

/// The answer to [`Fetcher::request`].
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// From `Retry-After` (seconds or an HTTP-date, made relative to when it was read).
    pub retry_after: Option<Duration>,
    /// The start of the body, at most [`REPLY_BODY_LIMIT`] bytes.
    pub body: Vec<u8>,
}

/// Why a fetch failed. The texts are shown to users as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The address is not allowed; the text starts with "refused:" and says why.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Resolve(String),
    #[error("the server took too long to answer (timed out)")]
    Timeout,
    #[error("the response is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("too many redirects")]
    TooManyRedirects,
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("HTTP error: {0}")]
    Http(String),
    #[error("invalid fetch configuration: {0}")]
    Config(String),
}

/// Cheap to clone: one `reqwest::Client`, one per-host limiter, shared.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    cfg: FetchConfig,
    policy: Arc<AddressPolicy>,
    limiter: HostLimiter,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    pub fn new(cfg: FetchConfig) -> Result<Self, FetchError> {
        if cfg.per_host_concurrency == 0 {
            return Err(FetchError::Config(
                "per_host_concurrency must be at least 1".into(),
            ));
        }
        if cfg.total_timeout.is_zero() || cfg.connect_timeout.is_zero() {
            return Err(FetchError::Config("timeouts must be above zero".into()));
        }
        let policy = Arc::new(AddressPolicy {
            allow_private_networks: cfg.allow_private_networks,
            allowlist: cfg.allowlist.clone(),
        });
        let client = reqwest::Client::builder()
            .user_agent(cfg.user_agent.clone())
            .connect_timeout(cfg.connect_timeout)
            // Redirects are followed by hand in `fetch`, to check and record every hop.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself, out of the resolver's reach.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: Arc::clone(&policy),
            }))
            .gzip(true)
            .brotli(true)
            .deflate(true)
            .build()
            .map_err(|e| FetchError::Config(chain(&e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                limiter: HostLimiter::new(cfg.per_host_concurrency),
                cfg,
                policy,
            }),
        })
    }

    pub fn config(&self) -> &FetchConfig {
        &self.inner.cfg
    }

    /// Checks a URL a user gave, before anything is stored: http(s), a host, and (unless
    /// the operator allows private networks) that the host is not, and does not resolve
    /// to, a forbidden address. Returns the parsed URL. Passing does not make later
    /// fetches safe by itself; they are checked again at connect time.
    pub async fn check_url(&self, url: &str) -> Result<Url, FetchError> {
        let parsed = parse_http_url(url)?;
        if let Some(refusal) = self.literal_refusal(&parsed) {
            return Err(FetchError::Forbidden(format!("refused: {refusal}")));
        }
        if !self.inner.policy.allow_private_networks
            && let Some(Host::Domain(domain)) = parsed.host()
        {
            let port = parsed.port_or_known_default().unwrap_or(80);
            let resolving = resolve_allowed(&self.inner.policy, domain, port);
            match tokio::time::timeout(self.inner.cfg.connect_timeout, resolving).await {
                Ok(result) => {
                    result?;
                }
                Err(_) => {
                    return Err(FetchError::Resolve(format!(
                        "could not resolve {domain}: timed out"
                    )));
                }
            }
        }
        Ok(parsed)
    }

    /// Fetches `req.url`, following redirects. Only transport failures are errors: any
    /// HTTP status comes back as a response.
    pub async fn fetch(&self, req: FetchRequest) -> Result<FetchResponse, FetchError> {
        let total = self.inner.cfg.total_timeout;
        match tokio::time::timeout(total, self.fetch_inner(req)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout),
        }
    }

    async fn fetch_inner(&self, req: FetchRequest) -> Result<FetchResponse, FetchError> {
        let mut url = parse_http_url(&req.url)?;
        if let Some(refusal) = self.literal_refusal(&url) {
            return Err(FetchError::Forbidden(format!("refused: {refusal}")));
        }
        let mut redirects: Vec<(u16, String)> = Vec::new();
        loop {
            let host_key = match url.host_str() {
                Some(host) => host.to_ascii_lowercase(),
                None => return Err(FetchError::InvalidUrl(format!("{url} has no host"))),
            };
            // Held until the body is read: a slow download still occupies its slot.
            let permit = self.inner.limiter.acquire(&host_key).await;

            let mut builder = self
                .inner
                .client
                .get(url.clone())
                .header(header::ACCEPT, req.accept);
            if let Some(etag) = &req.etag {
                builder = builder.header(header::IF_NONE_MATCH, etag.as_str());
            }
            if let Some(last_modified) = &req.last_modified {
                builder = builder.header(header::IF_MODIFIED_SINCE, last_modified.as_str());
            }
            let response = builder.send().await.map_err(map_reqwest_error)?;
            let status = response.status();

            if is_followed_redirect(status)
                && let Some(location) = response.headers().get(header::LOCATION)
            {
                let location = location.to_str().map_err(|_| {
                    FetchError::Http(format!(
                        "{url} redirected with an unreadable Location header"
                    ))
                })?;
                let next = url.join(location.trim()).map_err(|e| {
                    FetchError::InvalidUrl(format!(
                        "{url} redirected to \"{location}\", which is not a valid URL: {e}"
                    ))
                })?;
                drop(response);
                drop(permit);
                if redirects.len() >= self.inner.cfg.max_redirects {
                    return Err(FetchError::TooManyRedirects);
                }
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(FetchError::InvalidUrl(format!(
                        "{url} redirected to {next}; only http and https URLs can be fetched"
                    )));
                }
                if let Some(refusal) = self.literal_refusal(&next) {
                    return Err(FetchError::Forbidden(format!(
                        "refused: {url} redirected to {next}, but {refusal}"
                    )));
                }
                tracing::debug!(from = %url, to = %next, status = status.as_u16(), "redirect");
                redirects.push((status.as_u16(), next.to_string()));
                url = next;
                continue;
            }

            let mut out = read_headers(&url, status, response.headers());
            out.redirects = redirects;
            out.body = self.read_body(response).await?;
            drop(permit);
            tracing::debug!(%url, status = out.status, bytes = out.body.len(), "fetched");
            return Ok(out);
        }
    }

    /// POSTs a form (a WebSub subscription request to a hub) under the same address rules,
    /// host limits and timeout as a fetch; redirects are not followed. Returns the status
    /// and the start of the body (for error messages).
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<(u16, String), FetchError> {
        let total = self.inner.cfg.total_timeout;
        let work = async {
            let url = parse_http_url(url)?;
            if let Some(refusal) = self.literal_refusal(&url) {
                return Err(FetchError::Forbidden(format!("refused: {refusal}")));
            }
            let host_key = url.host_str().unwrap_or_default().to_ascii_lowercase();
            let _permit = self.inner.limiter.acquire(&host_key).await;
            let response = self
                .inner
                .client
                .post(url)
                .form(form)
                .send()
                .await
                .map_err(map_reqwest_error)?;
            let status = response.status().as_u16();
            let body = self.read_body(response).await.unwrap_or_default();
            let snippet: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            Ok((status, snippet))
        };
        match tokio::time::timeout(total, work).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout),
        }
    }

    /// One request of any method (a delivery: a webhook POST, a Matrix PUT) under the same
    /// address rules, per-host limit and total timeout as a fetch; redirects are not
    /// followed (a 3xx comes back as it is). Any HTTP status is a reply, not an error. At
    /// most [`REPLY_BODY_LIMIT`] bytes of the reply's body are kept (the rest is dropped,
    /// not an error): callers want an error text or a small JSON answer, never a download.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        basic_auth: Option<(String, String)>,
    ) -> Result<HttpReply, FetchError> {
        let total = self.inner.cfg.total_timeout;
        let work = async {
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| FetchError::Config(format!("invalid HTTP method {method:?}")))?;
            let url = parse_http_url(url)?;
            if let Some(refusal) = self.literal_refusal(&url) {
                return Err(FetchError::Forbidden(format!("refused: {refusal}")));
            }
            let mut header_map = HeaderMap::new();
            for (name, value) in headers {
                let name = header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| FetchError::Config(format!("invalid header name {name:?}")))?;
                let value = header::HeaderValue::from_str(value)
                    .map_err(|_| FetchError::Config(format!("invalid value for header {name}")))?;
                header_map.append(name, value);
            }
            let host_key = url.host_str().unwrap_or_default().to_ascii_lowercase();
            let _permit = self.inner.limiter.acquire(&host_key).await;
            let mut builder = self
                .inner
                .client
                .request(method, url)
                .headers(header_map)
                .body(body);
            if let Some((user, password)) = basic_auth {
                builder = builder.basic_auth(user, Some(password));
            }
            let response = builder.send().await.map_err(map_reqwest_error)?;
            let status = response.status().as_u16();
            let retry_after = header_str(response.headers(), header::RETRY_AFTER)
                .and_then(|v| headers::retry_after(&v, SystemTime::now()));
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                // A reply cut short after its status still says what the status says.
                let Ok(chunk) = chunk else { break };
                let room = REPLY_BODY_LIMIT - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= REPLY_BODY_LIMIT {
                    break;
                }
            }
            Ok(HttpReply {
                status,
                retry_after,
                body,
            })
        };
        match tokio::time::timeout(total, work).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout),
        }
    }

    /// For a URL whose host is an IP literal (which no resolver sees): why it is refused.
    fn literal_refusal(&self, url: &Url) -> Option<String> {
        let ip = match url.host()? {
            Host::Ipv4(v4) => std::net::IpAddr::V4(v4),
            Host::Ipv6(v6) => std::net::IpAddr::V6(v6),
            Host::Domain(_) => return None,
        };
        self.inner
            .policy
            .check(ip)
            .err()
            .map(|reason| format!("{ip} is {reason}; {OPERATOR_HINT}"))
    }

    async fn read_body(&self, response: reqwest::Response) -> Result<Vec<u8>, FetchError> {
        let max = self.inner.cfg.max_body_bytes;
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| match map_reqwest_error(e) {
                FetchError::Http(msg) => {
                    FetchError::Http(format!("the response body could not be read: {msg}"))
                }
                other => other,
            })?;
            if body.len() + chunk.len() > max {
                return Err(FetchError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn parse_http_url(input: &str) -> Result<Url, FetchError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(FetchError::InvalidUrl("the URL is empty".into()));
    }
    let url = Url::parse(input)
        .map_err(|e| FetchError::InvalidUrl(format!("\"{input}\" is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::InvalidUrl(format!(
            "only http and https URLs can be fetched, not {}:",
            url.scheme()
        )));
    }
    match url.host_str() {
        Some(host) if !host.is_empty() => Ok(url),
        _ => Err(FetchError::InvalidUrl(format!("\"{input}\" has no host"))),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn header_all(headers: &HeaderMap, name: header::HeaderName) -> Vec<&str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn read_headers(url: &Url, status: StatusCode, h: &HeaderMap) -> FetchResponse {
    let links = headers::links(&header_all(h, header::LINK), url);
    let link_hub = links
        .iter()
        .filter(|l| l.rels.iter().any(|r| r == "hub"))
        .map(|l| l.target.clone())
        .collect();
    let link_self = links
        .iter()
        .find(|l| l.rels.iter().any(|r| r == "self"))
        .map(|l| l.target.clone());
    FetchResponse {
        status: status.as_u16(),
        final_url: url.to_string(),
        redirects: Vec::new(),
        not_modified: status == StatusCode::NOT_MODIFIED,
        etag: header_str(h, header::ETAG),
        last_modified: header_str(h, header::LAST_MODIFIED),
        content_type: header_str(h, header::CONTENT_TYPE),
        content_location: header_str(h, header::CONTENT_LOCATION),
        cache_control_max_age: headers::cache_control_max_age(&header_all(
            h,
            header::CACHE_CONTROL,
        )),
        expires: header_str(h, header::EXPIRES).and_then(|v| headers::expires(&v)),
        retry_after: header_str(h, header::RETRY_AFTER)
            .and_then(|v| headers::retry_after(&v, SystemTime::now())),
        link_hub,
        link_self,
        body: Vec::new(),
    }
}

/// Turns a reqwest error into ours, surfacing a refusal from the resolver (which reqwest
/// wraps as a connect error) and the underlying cause of connect failures.
fn map_reqwest_error(e: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = source {
        if let Some(ours) = err.downcast_ref::<FetchError>() {
            return ours.clone();
        }
        source = err.source();
    }
    if e.is_timeout() {
        FetchError::Timeout
    } else if e.is_connect() {
        FetchError::Connect(cause(&e))
    } else {
        FetchError::Http(cause(&e))
    }
}

/// The error and its causes, without reqwest's "error sending request for url (…)" lead.
fn cause(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = e.source();
    while let Some(err) = source {
        let text = err.to_string();
        // hyper repeats the inner message in the outer one at times; keep it once.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing_errors_are_clear() {
        assert_eq!(
            parse_http_url("ftp://example.com/x"),
            Err(FetchError::InvalidUrl(
                "only http and https URLs can be fetched, not ftp:".into()
            ))
        );
        assert!(matches!(
            parse_http_url("not a url"),
            Err(FetchError::InvalidUrl(m)) if m.contains("not a valid URL")
        ));
        assert!(matches!(
            parse_http_url("  "),
            Err(FetchError::InvalidUrl(_))
        ));
        assert!(parse_http_url(" https://example.com/feed ").is_ok());
    }

    #[test]
    fn permanent_redirect_takes_leading_permanent_hops() {
        let mut r = read_headers(
            &Url::parse("https://a.example/").unwrap(),
            StatusCode::OK,
            &HeaderMap::new(),
        );
        assert_eq!(r.permanent_redirect(), None);
        r.redirects = vec![(301, "https://b/".into()), (308, "https://c/".into())];
        assert_eq!(r.permanent_redirect(), Some("https://c/"));
        r.redirects = vec![(301, "https://b/".into()), (302, "https://c/".into())];
        assert_eq!(r.permanent_redirect(), Some("https://b/"));
        r.redirects = vec![(307, "https://b/".into()), (301, "https://c/".into())];
        assert_eq!(r.permanent_redirect(), None);
    }

    #[test]
    fn new_rejects_bad_config() {
        let cfg = FetchConfig {
            per_host_concurrency: 0,
            ..FetchConfig::default()
        };
        assert!(matches!(Fetcher::new(cfg), Err(FetchError::Config(_))));
    }
}
