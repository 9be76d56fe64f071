//! Apprise-style destination URLs to [`DestinationConfig`]s (I/O-free). The forms, one
//! destination per URL:
//!
//! | URL | kind |
//! |---|---|
//! | `json://[user:password@]host[:port]/path[?+Header=value]`, `jsons://…` | webhook (http, https) |
//! | `twilio://AccountSID:AuthToken@FromPhone/ToPhone` | twilio |
//! | `ntfy://[user:password@\|token@]host[:port]/topic`, `ntfys://…`, `ntfy://topic` | ntfy (http, https, ntfy.sh) |
//! | `slack://[botname@]TokenA/TokenB/TokenC`, `https://hooks.slack.com/services/…` | slack |
//! | `discord://[botname@]WebhookID/WebhookToken`, `https://discord.com/api/webhooks/…` | discord |
//! | `matrixs://access_token@host[:port]/#alias:server` (or `/!roomid:server`), `matrix://…` | matrix (https, http) |
//! | `mailto:alice@example.org`, `mailto://alice@example.org`, `mailtos://…` | mailto |
//!
//! Credentials in the user part are percent-decoded (`p%40ss` is `p@ss`). Apprise's
//! general options `format`, `overflow`, `emojis`, `cto` and `rto` are accepted and
//! ignored; any other option is refused by name. `xmpp://` is recognized and refused until
//! the XMPP agent arrives. The result still goes through [`DestinationConfig::prepare`].

use percent_encoding::percent_decode_str;

use crate::{DestinationConfig, Error, discord, mailto, matrix, ntfy, slack, twilio, webhook};

const SUPPORTED: &str = "json://, jsons://, twilio://, ntfy://, ntfys://, slack://, discord://, matrix://, matrixs://, mailto:";
/// Apprise's options for every service that mean nothing here.
const IGNORED_OPTIONS: &[&str] = &["format", "overflow", "emojis", "cto", "rto"];
const MAX_URL_LEN: usize = 4096;

/// Parses an Apprise-style URL.
pub fn parse(url: &str) -> Result<DestinationConfig, Error> {
    let url = url.trim();
    if url.is_empty() {
        return Err(Error::Invalid("the URL is empty".into()));
    }
    if url.len() > MAX_URL_LEN {
        return Err(Error::Invalid(format!(
            "the URL is too long: at most {MAX_URL_LEN} characters"
        )));
    }
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(Error::Invalid(
            "the URL must not contain spaces or control characters (percent-encode them)".into(),
        ));
    }
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(unknown_scheme(url));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme == "mailto" && !rest.starts_with("//") {
        return mailto_rfc6068(rest);
    }
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(unknown_scheme(url));
    };
    let parts = Parts::split(rest)?;
    match scheme.as_str() {
        "json" | "jsons" => parse_webhook(&scheme, parts),
        "twilio" => parse_twilio(parts),
        "ntfy" | "ntfys" => parse_ntfy(&scheme, parts),
        "slack" => parse_slack(parts),
        "discord" => parse_discord(parts),
        "matrix" | "matrixs" => parse_matrix(&scheme, parts),
        "mailto" | "mailtos" => parse_mailto(parts),
        "http" | "https" => parse_known_https(url, parts),
        "xmpp" | "xmpps" => parse_xmpp(url),
        _ => Err(unknown_scheme(url)),
    }
}

/// `xmpp://alice@example.org` (Apprise's form for a recipient; credentials have no place
/// here: tidings sends from its own connection).
fn parse_xmpp(url: &str) -> Result<DestinationConfig, Error> {
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let jid = rest
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    if jid.contains(':') {
        return Err(Error::Invalid(
            "xmpp://: give only the recipient (xmpp://alice@example.org); tidings sends from its own XMPP connection".into(),
        ));
    }
    Ok(DestinationConfig::Xmpp(crate::xmpp::Config {
        jid: jid.to_owned(),
    }))
}

fn unknown_scheme(url: &str) -> Error {
    let scheme: String = url
        .split(':')
        .next()
        .unwrap_or_default()
        .chars()
        .take(20)
        .collect();
    Error::Invalid(format!(
        "unsupported destination URL scheme {scheme:?}: use one of {SUPPORTED}"
    ))
}

/// A URL after `scheme://`, split by hand: Apprise's forms put tokens where a URL parser
/// expects a host (case kept, `+` allowed) and `#` where it expects a fragment.
#[derive(Debug, Default)]
struct Parts {
    user: Option<String>,
    password: Option<String>,
    /// As written (not lower-cased, not decoded).
    host: String,
    port: Option<u16>,
    /// Decoded, non-empty segments.
    path: Vec<String>,
    /// Decoded pairs; `+` is kept as it is (Apprise's header prefix).
    query: Vec<(String, String)>,
}

fn decode(s: &str) -> Result<String, Error> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Error::Invalid("the URL has a percent-encoding that is not UTF-8".into()))
}

impl Parts {
    fn split(rest: &str) -> Result<Parts, Error> {
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i + 1..]),
            None => (before_query, ""),
        };
        let mut parts = Parts::default();
        let hostport = match authority.rfind('@') {
            Some(i) => {
                let userinfo = &authority[..i];
                let (user, password) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                parts.user = Some(decode(user)?);
                parts.password = password.map(decode).transpose()?;
                &authority[i + 1..]
            }
            None => authority,
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            match v6.split_once(']') {
                Some((addr, after)) => (format!("[{addr}]"), after.strip_prefix(':')),
                None => {
                    return Err(Error::Invalid(
                        "the URL has an unclosed [IPv6 address".into(),
                    ));
                }
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        parts.host = host;
        if let Some(port) = port {
            parts.port = Some(port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                Error::Invalid(format!("the URL's port {port:?} is not a number 1-65535"))
            })?);
        }
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            parts.path.push(decode(seg)?);
        }
        if let Some(query) = query {
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                parts.query.push((decode(k)?, decode(v)?));
            }
        }
        Ok(parts)
    }

    /// `host` as a URL authority (host names lower-cased), with the port.
    fn authority(&self) -> Result<String, Error> {
        let host = self.host.to_ascii_lowercase();
        let ok = !host.is_empty()
            && (host.starts_with('[')
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
        if !ok {
            return Err(Error::Invalid(format!(
                "{:?} is not a valid host name",
                self.host.chars().take(80).collect::<String>()
            )));
        }
        Ok(match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    }

    /// Refuses options other than Apprise's ignorable ones and `allowed`.
    fn only_options(&self, kind: &str, allowed: &[&str]) -> Result<(), Error> {
        for (k, _) in &self.query {
            let k = k.to_ascii_lowercase();
            if !IGNORED_OPTIONS.contains(&k.as_str()) && !allowed.contains(&k.as_str()) {
                return Err(Error::Invalid(format!(
                    "{kind} URLs do not take the option {k:?}"
                )));
            }
        }
        Ok(())
    }

    fn no_credentials(&self, kind: &str) -> Result<(), Error> {
        if self.user.is_some() || self.password.is_some() {
            return Err(Error::Invalid(format!(
                "{kind} URLs do not take a user or password"
            )));
        }
        Ok(())
    }
}

fn parse_webhook(scheme: &str, parts: Parts) -> Result<DestinationConfig, Error> {
    let http = if scheme == "jsons" { "https" } else { "http" };
    let mut url = format!("{http}://{}/", parts.authority()?);
    let encode = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    url.push_str(
        &parts
            .path
            .iter()
            .map(|s| percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/"),
    );
    let mut headers = std::collections::BTreeMap::new();
    let mut query = Vec::new();
    for (k, v) in &parts.query {
        if let Some(name) = k.strip_prefix('+') {
            headers.insert(name.to_owned(), v.clone());
        } else if k.starts_with('-') || k.starts_with(':') {
            return Err(Error::Invalid(format!(
                "webhook URLs do not take payload options like {k:?}: the JSON body is fixed (see the webhook payload documentation)"
            )));
        } else if k.eq_ignore_ascii_case("method") {
            if !v.eq_ignore_ascii_case("post") {
                return Err(Error::Invalid("webhooks are always sent with POST".into()));
            }
        } else if !IGNORED_OPTIONS.contains(&k.to_ascii_lowercase().as_str()) {
            query.push(format!("{}={}", encode(k), encode(v)));
        }
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    if parts.password.is_some() && parts.user.as_deref().is_none_or(str::is_empty) {
        return Err(Error::Invalid(
            "a webhook URL with a password needs a user too: json://user:password@host/path".into(),
        ));
    }
    Ok(DestinationConfig::Webhook(webhook::Config {
        url,
        secret: None,
        headers,
        username: parts.user.filter(|u| !u.is_empty()),
        password: parts.password,
    }))
}

/// Path segments keep their readable characters.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// A phone number from a URL: the `+` may be left out.
fn url_phone(field: &str, s: &str) -> Result<String, Error> {
    let s = s.trim();
    if s.starts_with('+') {
        twilio::phone_number(field, s)
    } else {
        twilio::phone_number(field, &format!("+{s}"))
    }
}

fn parse_twilio(parts: Parts) -> Result<DestinationConfig, Error> {
    let form = "use twilio://AccountSID:AuthToken@FromPhone/ToPhone";
    parts.only_options("twilio", &[])?;
    let (Some(sid), Some(token)) = (parts.user.clone(), parts.password.clone()) else {
        return Err(Error::Invalid(format!(
            "the twilio URL needs the account SID and auth token: {form}"
        )));
    };
    let to = match parts.path.as_slice() {
        [to] => to.clone(),
        [] => {
            return Err(Error::Invalid(format!(
                "the twilio URL has no number to send to: {form}"
            )));
        }
        _ => {
            return Err(Error::Invalid(
                "a twilio destination sends to one number: make one destination per number".into(),
            ));
        }
    };
    if parts.port.is_some() {
        return Err(Error::Invalid(format!("the twilio URL has a port: {form}")));
    }
    Ok(DestinationConfig::Twilio(twilio::Config {
        account_sid: sid,
        auth_token: token,
        from: url_phone("from", &parts.host)?,
        to: url_phone("to", &to)?,
        base_url: None,
    }))
}

fn parse_ntfy(scheme: &str, parts: Parts) -> Result<DestinationConfig, Error> {
    parts.only_options("ntfy", &[])?;
    let http = if scheme == "ntfys" { "https" } else { "http" };
    let (url, topic) = match parts.path.as_slice() {
        // ntfy://topic: Apprise's short form for the public server.
        [] if parts.port.is_none() && ntfy::valid_topic(&parts.host) => {
            (ntfy::DEFAULT_SERVER.to_owned(), parts.host.clone())
        }
        [] => {
            return Err(Error::Invalid(
                "the ntfy URL has no topic: use ntfy://host/topic or ntfys://host/topic".into(),
            ));
        }
        [topic] => (format!("{http}://{}", parts.authority()?), topic.clone()),
        _ => {
            return Err(Error::Invalid(
                "an ntfy destination publishes to one topic: make one destination per topic".into(),
            ));
        }
    };
    let (token, username, password) = match (parts.user, parts.password) {
        (Some(token), None) => (Some(token), None, None),
        (Some(user), Some(password)) => (None, Some(user), Some(password)),
        _ => (None, None, None),
    };
    Ok(DestinationConfig::Ntfy(ntfy::Config {
        url,
        topic,
        token,
        username,
        password,
    }))
}

fn token_part(kind: &str, name: &str, s: &str) -> Result<(), Error> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::Invalid(format!(
            "the {kind} URL's {name} must be letters and digits"
        )));
    }
    Ok(())
}

fn parse_slack(parts: Parts) -> Result<DestinationConfig, Error> {
    let form = "use slack://TokenA/TokenB/TokenC (from the webhook URL https://hooks.slack.com/services/TokenA/TokenB/TokenC)";
    parts.only_options("slack", &[])?;
    if parts.password.is_some() || parts.port.is_some() {
        return Err(Error::Invalid(format!(
            "unexpected parts in the slack URL: {form}"
        )));
    }
    let (b, c) = match parts.path.as_slice() {
        [b, c] => (b, c),
        [_, _, rest @ ..]
            if rest
                .iter()
                .any(|s| s.starts_with('#') || s.starts_with('@')) =>
        {
            return Err(Error::Invalid(
                "slack incoming webhooks post to the channel chosen when the webhook was made; remove the channel from the URL".into(),
            ));
        }
        _ => {
            return Err(Error::Invalid(format!(
                "the slack URL needs three tokens: {form}"
            )));
        }
    };
    for (name, t) in [
        ("TokenA", parts.host.as_str()),
        ("TokenB", b),
        ("TokenC", c),
    ] {
        token_part("slack", name, t)?;
    }
    let mut cfg = slack::Config::from_tokens(&parts.host, b, c);
    cfg.username = parts.user.filter(|u| !u.is_empty());
    Ok(DestinationConfig::Slack(cfg))
}

fn parse_discord(parts: Parts) -> Result<DestinationConfig, Error> {
    let form = "use discord://WebhookID/WebhookToken (from https://discord.com/api/webhooks/WebhookID/WebhookToken)";
    parts.only_options("discord", &[])?;
    if parts.password.is_some() || parts.port.is_some() {
        return Err(Error::Invalid(format!(
            "unexpected parts in the discord URL: {form}"
        )));
    }
    let [token] = parts.path.as_slice() else {
        return Err(Error::Invalid(format!(
            "the discord URL needs the webhook id and token: {form}"
        )));
    };
    token_part("discord", "WebhookID", &parts.host)?;
    token_part("discord", "WebhookToken", token)?;
    let mut cfg = discord::Config::from_parts(&parts.host, token);
    cfg.username = parts.user.filter(|u| !u.is_empty());
    Ok(DestinationConfig::Discord(cfg))
}

fn parse_matrix(scheme: &str, parts: Parts) -> Result<DestinationConfig, Error> {
    let form = "use matrixs://ACCESS_TOKEN@host/#room:server (or /!roomid:server)";
    parts.only_options("matrix", &[])?;
    if parts.password.is_some() {
        return Err(Error::Invalid(format!(
            "matrix destinations do not log in with a user and password: create an access token for the account (e.g. in Element: Settings, Help & About, Access Token) and {form}"
        )));
    }
    let Some(token) = parts.user.clone().filter(|t| !t.is_empty()) else {
        return Err(Error::Invalid(format!(
            "the matrix URL has no access token: {form}"
        )));
    };
    let http = if scheme == "matrixs" { "https" } else { "http" };
    let homeserver = format!("{http}://{}", parts.authority()?);
    let room = match parts.path.as_slice() {
        [room] => room.clone(),
        [] => {
            return Err(Error::Invalid(format!(
                "the matrix URL has no room: {form}"
            )));
        }
        _ => {
            return Err(Error::Invalid(
                "a matrix destination posts to one room: make one destination per room".into(),
            ));
        }
    };
    // `#room` alone means a room on the homeserver's own name.
    let room = if room.starts_with('#') && !room.contains(':') {
        format!("{room}:{}", parts.host.to_ascii_lowercase())
    } else {
        room
    };
    if !matrix::valid_room(&room) {
        return Err(Error::Invalid(format!(
            "{room:?} is not a room alias or id: {form}"
        )));
    }
    Ok(DestinationConfig::Matrix(matrix::Config {
        homeserver,
        access_token: token,
        room,
    }))
}

fn parse_mailto(parts: Parts) -> Result<DestinationConfig, Error> {
    let form = "use mailto:alice@example.org or mailto://alice@example.org";
    if parts.password.is_some() {
        return Err(Error::Invalid(format!(
            "tidings sends mail through the operator's relay, so a mailto URL takes no password: {form}"
        )));
    }
    parts.only_options("mailto", &["to"])?;
    let to_option: Vec<&String> = parts
        .query
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("to"))
        .map(|(_, v)| v)
        .collect();
    if !parts.path.is_empty() || parts.port.is_some() {
        return Err(Error::Invalid(format!(
            "unexpected parts in the mailto URL: {form}"
        )));
    }
    let to = match (parts.user, to_option.as_slice()) {
        (Some(user), []) => format!("{user}@{}", parts.host),
        (None, [to]) => (*to).clone(),
        (None, []) => {
            return Err(Error::Invalid(format!(
                "the mailto URL has no address: {form}"
            )));
        }
        _ => {
            return Err(Error::Invalid(
                "a mailto destination sends to one address: make one destination per address"
                    .into(),
            ));
        }
    };
    if to.contains(',') {
        return Err(Error::Invalid(
            "a mailto destination sends to one address: make one destination per address".into(),
        ));
    }
    mailto::address_field("the mailto address", &to)?;
    Ok(DestinationConfig::Mailto(mailto::Config { to }))
}

/// `mailto:alice@example.org` (RFC 6068).
fn mailto_rfc6068(rest: &str) -> Result<DestinationConfig, Error> {
    let (addr, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    if query.is_some_and(|q| !q.is_empty()) {
        return Err(Error::Invalid(
            "mailto URLs take no options here (subject and body come from each notification)"
                .into(),
        ));
    }
    let to = decode(addr)?;
    if to.contains(',') {
        return Err(Error::Invalid(
            "a mailto destination sends to one address: make one destination per address".into(),
        ));
    }
    mailto::address_field("the mailto address", &to)?;
    Ok(DestinationConfig::Mailto(mailto::Config { to }))
}

/// Slack's and Discord's webhook URLs as they are, as Apprise accepts them.
fn parse_known_https(url: &str, parts: Parts) -> Result<DestinationConfig, Error> {
    let host = parts.host.to_ascii_lowercase();
    let segs: Vec<&str> = parts.path.iter().map(String::as_str).collect();
    match (host.as_str(), segs.as_slice()) {
        ("hooks.slack.com", ["services", _, _, _]) => {
            parts.no_credentials("slack")?;
            Ok(DestinationConfig::Slack(slack::Config {
                webhook_url: url.to_owned(),
                username: None,
            }))
        }
        (
            "discord.com" | "discordapp.com" | "canary.discord.com" | "ptb.discord.com",
            ["api", "webhooks", _, _],
        ) => {
            parts.no_credentials("discord")?;
            Ok(DestinationConfig::Discord(discord::Config {
                webhook_url: url.to_owned(),
                username: None,
            }))
        }
        _ => Err(Error::Invalid(format!(
            "an http(s) URL is taken as a destination only for Slack and Discord webhooks; for a generic webhook use jsons://host/path (or json:// for http), or the JSON form {{\"kind\": \"webhook\", \"url\": \"…\"}}. Supported schemes: {SUPPORTED}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ok(url: &str) -> DestinationConfig {
        parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn err(url: &str) -> String {
        match parse(url) {
            Ok(cfg) => panic!("{url} parsed as {cfg:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn webhooks() {
        assert_eq!(
            ok("jsons://hooks.example/x/y"),
            DestinationConfig::Webhook(webhook::Config {
                url: "https://hooks.example/x/y".into(),
                secret: None,
                headers: BTreeMap::new(),
                username: None,
                password: None,
            })
        );
        assert_eq!(
            ok(
                "json://bob:p%40ss@Hooks.Example:8080/in?+X-Team=ops&+Authorization-Extra=a%20b&token=abc&format=text"
            ),
            DestinationConfig::Webhook(webhook::Config {
                url: "http://hooks.example:8080/in?token=abc".into(),
                secret: None,
                headers: BTreeMap::from([
                    ("X-Team".into(), "ops".into()),
                    ("Authorization-Extra".into(), "a b".into()),
                ]),
                username: Some("bob".into()),
                password: Some("p@ss".into()),
            })
        );
        let DestinationConfig::Webhook(c) = ok("json://[::1]:9000/") else {
            unreachable!()
        };
        assert_eq!(c.url, "http://[::1]:9000/");
        assert!(err("json://hooks.example/x?:key=value").contains("payload"));
        assert!(err("json://hooks.example/x?method=GET").contains("POST"));
        assert!(err("json://ho st/").contains("spaces"));
        assert!(err("json://hooks.example:99999/").contains("port"));
        assert!(err("json://:secret@hooks.example/").contains("user"));
        assert!(err("json:///x").contains("host"));
    }

    #[test]
    fn twilio() {
        assert_eq!(
            ok("twilio://AC123:tok@15551234567/+15557654321"),
            DestinationConfig::Twilio(twilio::Config {
                account_sid: "AC123".into(),
                auth_token: "tok".into(),
                from: "+15551234567".into(),
                to: "+15557654321".into(),
                base_url: None,
            })
        );
        assert!(err("twilio://AC123@15551234567/15557654321").contains("auth token"));
        assert!(err("twilio://AC123:tok@15551234567").contains("no number"));
        assert!(
            err("twilio://AC123:tok@15551234567/1555765432/15557654322").contains("one number")
        );
        assert!(err("twilio://AC123:tok@15551234567/12").starts_with("to must be a phone number"));
        assert!(err("twilio://AC123:tok@15551234567/15557654321?region=x").contains("\"region\""));
    }

    #[test]
    fn ntfy() {
        let n = |url: &str| match ok(url) {
            DestinationConfig::Ntfy(c) => c,
            other => panic!("{other:?}"),
        };
        let c = n("ntfys://ntfy.example/alerts");
        assert_eq!(
            (c.url.as_str(), c.topic.as_str()),
            ("https://ntfy.example", "alerts")
        );
        assert_eq!(c.token, None);
        let c = n("ntfy://bob:secret@127.0.0.1:8080/alerts");
        assert_eq!(c.url, "http://127.0.0.1:8080");
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("bob"), Some("secret"))
        );
        let c = n("ntfys://tk_abc123@ntfy.example/alerts");
        assert_eq!(c.token.as_deref(), Some("tk_abc123"));
        let c = n("ntfy://my_topic");
        assert_eq!(
            (c.url.as_str(), c.topic.as_str()),
            ("https://ntfy.sh", "my_topic")
        );
        assert!(err("ntfy://ntfy.example.org").contains("no topic"));
        assert!(err("ntfy://ntfy.example/a/b").contains("one topic"));
        assert!(err("ntfy://ntfy.example/a?priority=high").contains("\"priority\""));
    }

    #[test]
    fn slack() {
        assert_eq!(
            ok("slack://T1ABC/B2DEF/xyzSECRET"),
            DestinationConfig::Slack(slack::Config {
                webhook_url: "https://hooks.slack.com/services/T1ABC/B2DEF/xyzSECRET".into(),
                username: None,
            })
        );
        let DestinationConfig::Slack(c) = ok("slack://tidings@T1ABC/B2DEF/xyzSECRET") else {
            unreachable!()
        };
        assert_eq!(c.username.as_deref(), Some("tidings"));
        assert!(matches!(
            ok("https://hooks.slack.com/services/T1ABC/B2DEF/xyzSECRET"),
            DestinationConfig::Slack(_)
        ));
        assert!(err("slack://T1ABC/B2DEF").contains("three tokens"));
        assert!(err("slack://T1ABC/B2DEF/xyz/#general").contains("channel"));
        assert!(err("slack://T1%2FA/B2DEF/xyz").contains("TokenA"));
    }

    #[test]
    fn discord() {
        assert_eq!(
            ok("discord://123456/abc-DEF_ghi"),
            DestinationConfig::Discord(discord::Config {
                webhook_url: "https://discord.com/api/webhooks/123456/abc-DEF_ghi".into(),
                username: None,
            })
        );
        let DestinationConfig::Discord(c) = ok("discord://bot@123456/tok") else {
            unreachable!()
        };
        assert_eq!(c.username.as_deref(), Some("bot"));
        assert!(matches!(
            ok("https://discord.com/api/webhooks/123/tok"),
            DestinationConfig::Discord(_)
        ));
        assert!(err("discord://123456").contains("id and token"));
        assert!(err("https://example.org/hook").contains("jsons://"));
    }

    #[test]
    fn matrix() {
        assert_eq!(
            ok("matrixs://syt_token@matrix.example.org/#ops:example.org"),
            DestinationConfig::Matrix(matrix::Config {
                homeserver: "https://matrix.example.org".into(),
                access_token: "syt_token".into(),
                room: "#ops:example.org".into(),
            })
        );
        let DestinationConfig::Matrix(c) = ok("matrix://tok@127.0.0.1:8008/!abc:localhost") else {
            unreachable!()
        };
        assert_eq!(
            (c.homeserver.as_str(), c.room.as_str()),
            ("http://127.0.0.1:8008", "!abc:localhost")
        );
        let DestinationConfig::Matrix(c) = ok("matrixs://tok@Matrix.Example.org:8448/%23ops")
        else {
            unreachable!()
        };
        assert_eq!(c.room, "#ops:matrix.example.org");
        let e = err("matrixs://alice:hunter2@matrix.example.org/#ops:example.org");
        assert!(e.contains("access token") && !e.contains("hunter2"), "{e}");
        assert!(err("matrixs://matrix.example.org/#ops:example.org").contains("no access token"));
        assert!(err("matrixs://tok@matrix.example.org").contains("no room"));
        assert!(err("matrixs://tok@matrix.example.org/ops").contains("room alias"));
    }

    #[test]
    fn mailto() {
        for url in [
            "mailto:alice@example.org",
            "MAILTO:alice@example.org",
            "mailto://alice@example.org",
            "mailtos://alice@example.org",
            "mailto://example.org?to=alice@example.org",
            "mailto:alice%40example.org",
        ] {
            assert_eq!(
                ok(url),
                DestinationConfig::Mailto(mailto::Config {
                    to: "alice@example.org".into()
                }),
                "{url}"
            );
        }
        let e = err("mailto://user:hunter2@gmail.com");
        assert!(e.contains("relay") && !e.contains("hunter2"), "{e}");
        assert!(err("mailto:a@example.org,b@example.org").contains("one address"));
        assert!(err("mailto:alice@example.org?subject=hi").contains("options"));
        assert!(err("mailto:alice").contains("email address"));
        assert!(err("mailto://example.org").contains("no address"));
    }

    #[test]
    fn other_schemes() {
        assert_eq!(
            parse("xmpp://alice@example.org").unwrap(),
            DestinationConfig::Xmpp(crate::xmpp::Config {
                jid: "alice@example.org".into()
            })
        );
        assert!(matches!(
            parse("xmpp://bot:pass@example.org"),
            Err(Error::Invalid(_))
        ));
        let e = err("pushover://user@token");
        assert!(
            e.contains("\"pushover\"") && e.contains("jsons://") && e.contains("mailto:"),
            "{e}"
        );
        assert!(err("").contains("empty"));
        assert!(err("no scheme here").contains("spaces"));
        assert!(err("noscheme").contains("unsupported"));
        assert!(err(&format!("json://{}", "a".repeat(5000))).contains("too long"));
    }

    #[test]
    fn parsed_urls_prepare() {
        for url in [
            "jsons://hooks.example/x",
            "twilio://AC123:tok@15551234567/15557654321",
            "ntfys://tk_abc@ntfy.example/alerts",
            "slack://T1ABC/B2DEF/xyzSECRET",
            "discord://123456/tok",
            "matrixs://tok@matrix.example.org/#ops:example.org",
            "mailto:alice@example.org",
        ] {
            ok(url).prepare().unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }
}
