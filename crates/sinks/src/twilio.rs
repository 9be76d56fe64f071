//! SMS through Twilio's Messages API (or a compatible gateway at another base URL): a form
//! `POST {base}/2010-04-01/Accounts/{sid}/Messages.json` with `To`, `From` and `Body`, HTTP
//! basic auth with the account SID and auth token. The text is the title and message,
//! trimmed to at most three SMS segments (counted in the alphabet the text needs: GSM-7 or
//! UCS-2) and then ending with a link to the full item. It does not track delivery
//! receipts; inbound SMS is the web edge's, which checks [`verify_signature`].
//!
//! Apprise URL: `twilio://AccountSID:AuthToken@FromPhone/ToPhone` (numbers with their
//! country code; the leading `+` may be left out in the URL).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha1::Sha1;
use tidings_sources::fetch::Fetcher;

use crate::http::{self, Request};
use crate::text::{best_link, credential, http_url_field};
use crate::{Error, Message, Outcome};

pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
/// Longer texts are trimmed to this many segments.
pub const MAX_SEGMENTS: usize = 3;
/// Links longer than this are left out rather than eat the text.
const MAX_LINK: usize = 200;

/// `{"kind": "twilio", "account_sid": "AC…", "auth_token": "…", "from": "+15551234567",
/// "to": "+15557654321", "base_url"?: "https://api.twilio.com"}`. `from` may also be a
/// Messaging Service SID (`MG…`).
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub account_sid: String,
    pub auth_token: String,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("twilio::Config")
            .field("account_sid", &self.account_sid)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub(crate) fn prepare(mut self) -> Result<Config, Error> {
        let sid = self.account_sid.trim();
        if sid.is_empty() || sid.len() > 64 || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::Invalid(
                "account_sid must be the account SID (letters and digits, like AC0123…)".into(),
            ));
        }
        self.account_sid = sid.to_owned();
        self.auth_token = credential("auth_token", &self.auth_token, 128)?;
        self.to = phone_number("to", &self.to)?;
        self.from = if is_messaging_service(self.from.trim()) {
            self.from.trim().to_owned()
        } else {
            phone_number("from", &self.from)?
        };
        if let Some(base) = &self.base_url {
            let url = http_url_field("base_url", base)?;
            self.base_url = Some(url.as_str().trim_end_matches('/').to_owned());
        }
        Ok(self)
    }

    pub(crate) fn redacted(&self) -> serde_json::Value {
        json!({
            "account_sid": self.account_sid,
            "auth_token_set": !self.auth_token.is_empty(),
            "from": self.from,
            "to": self.to,
            "base_url": self.base_url,
        })
    }

    pub(crate) fn address(&self) -> String {
        self.to.clone()
    }

    pub(crate) fn endpoint(&self) -> String {
        let base = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let sid = percent_encoding::utf8_percent_encode(
            &self.account_sid,
            percent_encoding::NON_ALPHANUMERIC,
        );
        format!(
            "{}/2010-04-01/Accounts/{sid}/Messages.json",
            base.trim_end_matches('/')
        )
    }
}

fn is_messaging_service(s: &str) -> bool {
    s.len() == 34 && s.starts_with("MG") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `+` and 7-15 digits; spaces, dashes, dots and parentheses are dropped.
pub(crate) fn phone_number(field: &str, value: &str) -> Result<String, Error> {
    let cleaned: String = value
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = cleaned.strip_prefix('+').unwrap_or("");
    if (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(cleaned)
    } else {
        Err(Error::Invalid(format!(
            "{field} must be a phone number in international form: + and 7-15 digits, like +15551234567"
        )))
    }
}

/// The alphabet an SMS is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// GSM 03.38: 160 characters in one segment, 153 per segment when concatenated.
    Gsm7,
    /// Any other text: 70 UTF-16 units in one segment, 67 per segment when concatenated.
    Ucs2,
}

const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Sent as an escape and the character: two septets.
const GSM_EXTENDED: &str = "\u{c}^{}\\[~]|€";

fn gsm_septets(c: char) -> Option<usize> {
    if GSM_BASIC.contains(c) {
        Some(1)
    } else if GSM_EXTENDED.contains(c) {
        Some(2)
    } else {
        None
    }
}

pub fn alphabet(text: &str) -> Alphabet {
    if text.chars().all(|c| gsm_septets(c).is_some()) {
        Alphabet::Gsm7
    } else {
        Alphabet::Ucs2
    }
}

/// How many SMS segments `text` takes. A character is never split across two segments
/// (an escaped GSM character, a UTF-16 surrogate pair), as phones and gateways do.
pub fn segments(text: &str) -> usize {
    let (single, multi, units): (usize, usize, Vec<usize>) = match alphabet(text) {
        Alphabet::Gsm7 => (
            160,
            153,
            text.chars().map(|c| gsm_septets(c).unwrap_or(2)).collect(),
        ),
        Alphabet::Ucs2 => (70, 67, text.chars().map(char::len_utf16).collect()),
    };
    if units.iter().sum::<usize>() <= single {
        return 1;
    }
    let mut count = 1;
    let mut used = 0;
    for u in units {
        if used + u > multi {
            count += 1;
            used = 0;
        }
        used += u;
    }
    count
}

/// The SMS text: title and message, or trimmed to [`MAX_SEGMENTS`] ending with the link to
/// the full item (the web UI's page, else the click URL).
pub fn sms_text(msg: &Message) -> String {
    let n = &msg.notification;
    let title = n.title.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let message = n.message.trim();
    let full = match (title, message.is_empty()) {
        (Some(t), false) => format!("{t}\n{message}"),
        (Some(t), true) => t.to_owned(),
        (None, false) => message.to_owned(),
        (None, true) => format!("New notification from {}", msg.source_name.trim()),
    };
    // Nothing past 3 segments survives, so a huge message is cut before counting.
    let full: String = full.replace("\r\n", "\n").chars().take(1000).collect();
    if segments(&full) <= MAX_SEGMENTS {
        return full;
    }
    let link = best_link(msg).filter(|l| l.len() <= MAX_LINK);
    let ellipsis = if alphabet(&full) == Alphabet::Gsm7 {
        "..."
    } else {
        "…"
    };
    let suffix = match link {
        Some(l) => format!("{ellipsis} {l}"),
        None => ellipsis.to_owned(),
    };
    let chars: Vec<char> = full.chars().collect();
    let candidate = |k: usize| {
        let mut s: String = chars[..k].iter().collect();
        s.truncate(s.trim_end().len());
        s.push_str(&suffix);
        s
    };
    // The longest prefix that still fits; the number of segments grows with the prefix.
    let (mut lo, mut hi) = (0, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if segments(&candidate(mid)) <= MAX_SEGMENTS {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    candidate(lo)
}

/// The form fields of the Messages API call.
pub fn form(cfg: &Config, msg: &Message) -> Vec<(String, String)> {
    let from_field = if is_messaging_service(&cfg.from) {
        "MessagingServiceSid"
    } else {
        "From"
    };
    vec![
        ("To".into(), cfg.to.clone()),
        (from_field.into(), cfg.from.clone()),
        ("Body".into(), sms_text(msg)),
    ]
}

pub(crate) async fn send(fetcher: &Fetcher, cfg: &Config, msg: &Message) -> Outcome {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form(cfg, msg))
        .finish();
    http::send(
        fetcher,
        Request {
            method: "POST",
            url: cfg.endpoint(),
            headers: vec![(
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: body.into_bytes(),
            basic_auth: Some((cfg.account_sid.clone(), cfg.auth_token.clone())),
        },
    )
    .await
}

/// Twilio's `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, the full URL followed by
/// every POST parameter's name and value, sorted by name)).
pub fn sign(auth_token: &str, full_url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(full_url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks an `X-Twilio-Signature` header value, in constant time.
pub fn verify_signature(
    auth_token: &str,
    full_url: &str,
    params: &[(String, String)],
    header_value: &str,
) -> bool {
    tidings_core::secret::constant_time_eq(
        sign(auth_token, full_url, params).as_bytes(),
        header_value.trim().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::message;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn twilio_documented_signature_example() {
        // https://www.twilio.com/docs/usage/security#validating-requests
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = [
            p("Digits", "1234"),
            p("To", "+18005551212"),
            p("From", "+14158675310"),
            p("Caller", "+14158675310"),
            p("CallSid", "CA1234567890ABCDE"),
        ];
        let expected = "GvWf1cFY/Q7PnoempGyD5oXAezc=";
        assert_eq!(sign("12345", url, &params), expected);
        assert!(verify_signature("12345", url, &params, expected));
        assert!(!verify_signature("12346", url, &params, expected));
        assert!(!verify_signature("12345", url, &params[1..], expected));
        assert!(!verify_signature("12345", url, &params, ""));
    }

    #[test]
    fn segment_counting() {
        assert_eq!(alphabet("Hello {world} €5"), Alphabet::Gsm7);
        assert_eq!(alphabet("Grüße ✓"), Alphabet::Ucs2);
        assert_eq!(segments(""), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // An escaped character counts two septets.
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        // ... and is never split: 152 septets then a two-septet character start segment 2.
        assert_eq!(
            segments(&format!("{}€{}", "a".repeat(152), "a".repeat(152))),
            3
        );
        assert_eq!(segments(&"ü".repeat(160)), 1, "ü is in GSM-7");
        assert_eq!(segments(&"ж".repeat(70)), 1);
        assert_eq!(segments(&"ж".repeat(71)), 2);
        assert_eq!(segments(&"ж".repeat(201)), 3);
        assert_eq!(segments(&"ж".repeat(202)), 4);
        // A surrogate pair is two units and stays whole.
        assert_eq!(segments(&"😀".repeat(35)), 1);
        assert_eq!(segments(&"😀".repeat(36)), 2);
    }

    #[test]
    fn short_text_is_sent_whole() {
        let msg = message();
        assert_eq!(sms_text(&msg), "nightly\nBackup finished\nall good");
    }

    #[test]
    fn long_gsm_text_is_trimmed_to_three_segments_with_the_link() {
        let mut msg = message();
        msg.notification.message = "word ".repeat(400);
        let text = sms_text(&msg);
        assert_eq!(alphabet(&text), Alphabet::Gsm7);
        assert_eq!(segments(&text), 3);
        assert!(
            text.ends_with("... https://tidings.example/n/01hf3zzzzzzzzzzzzzzz"),
            "{text}"
        );
        // It uses the room: no more than one more word would have fit.
        assert!(text.chars().count() > 459 - 60, "{}", text.len());
    }

    #[test]
    fn long_ucs2_text_is_trimmed_to_three_segments_with_the_click_link() {
        let mut msg = message();
        msg.web_url = None;
        msg.notification.message = "Привет мир ".repeat(100);
        let text = sms_text(&msg);
        assert_eq!(alphabet(&text), Alphabet::Ucs2);
        assert_eq!(segments(&text), 3);
        assert!(text.ends_with("… https://grafana.example/d/1"), "{text}");
        // A GSM link appended to UCS-2 text does not change the count.
        assert!(text.encode_utf16().count() > 201 - 40);
    }

    #[test]
    fn without_a_link_the_text_just_ends() {
        let mut msg = message();
        msg.web_url = None;
        msg.notification.click = Some("tel:+15551234567".into());
        msg.notification.message = "x".repeat(2000);
        let text = sms_text(&msg);
        assert_eq!(segments(&text), 3);
        assert!(text.ends_with("x..."));
    }

    #[test]
    fn phone_numbers() {
        assert_eq!(
            phone_number("to", "+1 (555) 123-4567").unwrap(),
            "+15551234567"
        );
        assert!(
            phone_number("to", "5551234567")
                .unwrap_err()
                .to_string()
                .starts_with("to")
        );
        assert!(phone_number("to", "+123").is_err());
        assert!(phone_number("to", "+1234567890123456").is_err());
        assert!(phone_number("to", "+1555abc4567").is_err());
    }

    #[test]
    fn form_and_endpoint() {
        let cfg = Config {
            account_sid: "AC123".into(),
            auth_token: "tok".into(),
            from: "+15550000000".into(),
            to: "+15551111111".into(),
            base_url: Some("http://127.0.0.1:9/".into()),
        }
        .prepare()
        .unwrap();
        assert_eq!(
            cfg.endpoint(),
            "http://127.0.0.1:9/2010-04-01/Accounts/AC123/Messages.json"
        );
        let form = form(&cfg, &message());
        assert_eq!(form[0], p("To", "+15551111111"));
        assert_eq!(form[1], p("From", "+15550000000"));
        assert_eq!(form[2].0, "Body");
        let mg = Config {
            from: format!("MG{}", "a".repeat(32)),
            ..cfg
        }
        .prepare()
        .unwrap();
        assert_eq!(super::form(&mg, &message())[1].0, "MessagingServiceSid");
    }
}
