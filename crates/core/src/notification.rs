//! The notification and its ntfy-compatible fields.

use serde::{Deserialize, Serialize};

use crate::InputError;
use crate::ids::NotificationId;

/// ntfy's five priorities. Serialized as the number 1-5, as ntfy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    Min = 1,
    Low = 2,
    #[default]
    Default = 3,
    High = 4,
    Urgent = 5,
}

impl Priority {
    /// Parses `1`-`5` or a name (`min`, `low`, `default`, `high`, `urgent`, and ntfy's
    /// aliases `max` for 5). Case-insensitive, surrounding spaces ignored.
    pub fn parse(s: &str) -> Result<Priority, InputError> {
        let t = s.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
            "1" | "min" => Priority::Min,
            "2" | "low" => Priority::Low,
            "3" | "default" | "" => Priority::Default,
            "4" | "high" => Priority::High,
            "5" | "urgent" | "max" => Priority::Urgent,
            _ => return Err(InputError::Priority(s.chars().take(40).collect())),
        })
    }

    pub fn from_number(n: i64) -> Result<Priority, InputError> {
        Priority::parse(&n.to_string())
    }

    pub fn as_number(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Priority::Min => "min",
            Priority::Low => "low",
            Priority::Default => "default",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

impl Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.as_number())
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Priority::from_number(n),
            Raw::S(s) => Priority::parse(&s),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// An action button (ntfy's `view`, `http`, `broadcast`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub action: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear: bool,
}

/// Limits on the fields of a notification.
pub const MAX_TITLE: usize = 1024;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG: usize = 64;
pub const MAX_URL: usize = 2048;
pub const MAX_ACTIONS: usize = 3;

impl Action {
    /// Parses ntfy's `Actions` header: a JSON array, or the simple form
    /// `view, Open, https://x, clear=true; http, Close, https://y, method=PUT`.
    pub fn parse_list(s: &str) -> Result<Vec<Action>, InputError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Vec::new());
        }
        let actions: Vec<Action> = if s.starts_with('[') {
            serde_json::from_str(s).map_err(|e| InputError::Actions(e.to_string()))?
        } else {
            s.split(';')
                .filter(|p| !p.trim().is_empty())
                .map(Action::parse_simple)
                .collect::<Result<_, _>>()?
        };
        if actions.len() > MAX_ACTIONS {
            return Err(InputError::Actions(format!(
                "at most {MAX_ACTIONS} actions"
            )));
        }
        for a in &actions {
            a.validate()?;
        }
        Ok(actions)
    }

    fn parse_simple(part: &str) -> Result<Action, InputError> {
        let fields: Vec<&str> = part.split(',').map(str::trim).collect();
        if fields.len() < 2 {
            return Err(InputError::Actions(format!(
                "{:?}: expected `type, label[, url][, key=value...]`",
                part.trim()
            )));
        }
        let mut a = Action {
            action: fields[0].to_ascii_lowercase(),
            label: fields[1].to_owned(),
            url: None,
            method: None,
            body: None,
            clear: false,
        };
        for f in &fields[2..] {
            match f.split_once('=') {
                Some(("clear", v)) => a.clear = v.eq_ignore_ascii_case("true"),
                Some(("method", v)) => a.method = Some(v.to_owned()),
                Some(("body", v)) => a.body = Some(v.to_owned()),
                Some(("url", v)) => a.url = Some(v.to_owned()),
                Some((k, _)) if !k.contains("://") && !k.contains(':') => {
                    return Err(InputError::Actions(format!("unknown action key {k:?}")));
                }
                _ if a.url.is_none() => a.url = Some((*f).to_owned()),
                _ => return Err(InputError::Actions(format!("unexpected field {f:?}"))),
            }
        }
        Ok(a)
    }

    fn validate(&self) -> Result<(), InputError> {
        match self.action.as_str() {
            "view" | "http" => {
                if self.url.as_deref().is_none_or(|u| !valid_link(u)) {
                    return Err(InputError::Actions(format!(
                        "{} action {:?} needs an http(s) URL",
                        self.action, self.label
                    )));
                }
            }
            "broadcast" => {}
            other => {
                return Err(InputError::Actions(format!(
                    "unknown action type {other:?}: use view, http or broadcast"
                )));
            }
        }
        if self.label.is_empty() || self.label.len() > 128 {
            return Err(InputError::Actions("labels are 1-128 characters".into()));
        }
        Ok(())
    }
}

fn valid_link(u: &str) -> bool {
    u.len() <= MAX_URL
        && ["http://", "https://", "mailto:", "tel:"]
            .iter()
            .any(|p| u.len() > p.len() && u[..p.len()].eq_ignore_ascii_case(p))
}

/// A notification: what an edge accepted, as every later stage sees it. The JSON form is
/// ntfy's message format (`event: "message"`), plus `source`, `author` and `acked`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: NotificationId,
    /// Unix seconds when the edge accepted it.
    pub time: i64,
    #[serde(default = "message_event")]
    pub event: String,
    /// The source id (`topic:backups`, `feed:<hash>`).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub message: String,
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// Who published it (a user name, a feed title, a mail sender).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

fn message_event() -> String {
    "message".into()
}

/// The optional fields of a publish, as strings from headers, query or JSON.
#[derive(Debug, Default, Clone)]
pub struct PublishFields {
    pub title: Option<String>,
    pub priority: Option<String>,
    pub tags: Option<String>,
    pub click: Option<String>,
    pub actions: Option<String>,
}

/// `s` cut to at most `max` characters, ending in '…' when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Parses a comma-separated tag list.
pub fn parse_tags(s: &str) -> Result<Vec<String>, InputError> {
    let tags: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    check_tags(&tags)?;
    Ok(tags)
}

pub fn check_tags(tags: &[String]) -> Result<(), InputError> {
    if tags.len() > MAX_TAGS {
        return Err(InputError::TooManyTags(MAX_TAGS));
    }
    if let Some(t) = tags
        .iter()
        .find(|t| t.is_empty() || t.chars().count() > MAX_TAG || t.contains(','))
    {
        return Err(InputError::Tag(t.chars().take(80).collect()));
    }
    Ok(())
}

impl PublishFields {
    /// Validates the fields and builds the notification.
    pub fn into_notification(
        self,
        id: NotificationId,
        time: i64,
        source: String,
        topic: Option<String>,
        message: String,
        author: Option<String>,
    ) -> Result<Notification, InputError> {
        let priority = match &self.priority {
            Some(p) => Priority::parse(p)?,
            None => Priority::Default,
        };
        let title = self.title.filter(|t| !t.trim().is_empty());
        if let Some(t) = &title
            && t.chars().count() > MAX_TITLE
        {
            return Err(InputError::TooLong {
                field: "title",
                max: MAX_TITLE,
            });
        }
        let tags = match &self.tags {
            Some(t) => parse_tags(t)?,
            None => Vec::new(),
        };
        let click = self.click.filter(|c| !c.trim().is_empty());
        if let Some(c) = &click
            && !valid_link(c.trim())
        {
            return Err(InputError::Click(c.chars().take(80).collect()));
        }
        let actions = match &self.actions {
            Some(a) => Action::parse_list(a)?,
            None => Vec::new(),
        };
        Ok(Notification {
            id,
            time,
            event: message_event(),
            source,
            topic,
            title,
            message,
            priority,
            tags,
            click: click.map(|c| c.trim().to_owned()),
            actions,
            author,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_parse_like_ntfy() {
        assert_eq!(Priority::parse("high").unwrap(), Priority::High);
        assert_eq!(Priority::parse(" 5 ").unwrap(), Priority::Urgent);
        assert_eq!(Priority::parse("MAX").unwrap(), Priority::Urgent);
        assert_eq!(Priority::parse("1").unwrap(), Priority::Min);
        assert!(Priority::parse("6").is_err());
        assert!(Priority::parse("loud").is_err());
        let j = serde_json::to_string(&Priority::High).unwrap();
        assert_eq!(j, "4");
        assert_eq!(
            serde_json::from_str::<Priority>("\"urgent\"").unwrap(),
            Priority::Urgent
        );
        assert!(serde_json::from_str::<Priority>("9").is_err());
    }

    #[test]
    fn actions_simple_and_json() {
        let a = Action::parse_list(
            "view, Open portal, https://home.example/, clear=true; http, Close door, https://api.example/door, method=PUT",
        )
        .unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].url.as_deref(), Some("https://home.example/"));
        assert!(a[0].clear);
        assert_eq!(a[1].method.as_deref(), Some("PUT"));
        let j = Action::parse_list(r#"[{"action":"view","label":"Go","url":"https://x.example"}]"#)
            .unwrap();
        assert_eq!(j[0].label, "Go");
        assert!(Action::parse_list("fly, Up, https://x.example").is_err());
        assert!(Action::parse_list("view, Nowhere").is_err());
        assert!(Action::parse_list("view, a, javascript:alert(1)").is_err());
        assert!(
            Action::parse_list("broadcast, a; broadcast, b; broadcast, c; broadcast, d").is_err()
        );
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("héllo", 5), "héllo");
        assert_eq!(truncate_chars("héllo wörld", 6), "héllo…");
    }

    #[test]
    fn fields_validate() {
        let f = PublishFields {
            title: Some("nightly".into()),
            priority: Some("high".into()),
            tags: Some("backup, ok".into()),
            click: Some("https://example.org".into()),
            actions: None,
        };
        let n = f
            .into_notification(
                NotificationId::new(0),
                0,
                "topic:t".into(),
                Some("t".into()),
                "done".into(),
                None,
            )
            .unwrap();
        assert_eq!(n.tags, vec!["backup", "ok"]);
        assert_eq!(n.priority, Priority::High);
        let bad = PublishFields {
            click: Some("javascript:alert(1)".into()),
            ..Default::default()
        };
        assert!(
            bad.into_notification(
                NotificationId::new(0),
                0,
                "s".into(),
                None,
                "m".into(),
                None
            )
            .is_err()
        );
    }
}
