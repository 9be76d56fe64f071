//! Per-subscription filters, applied by the source avatar before it sends anything to a
//! subscriber. Keyword matching is case-insensitive and word-aware: `2br` matches
//! "Sunny 2BR flat" but not "12br"; a keyword of several words matches them in sequence.

use serde::{Deserialize, Serialize};

use crate::InputError;
use crate::notification::{Notification, Priority};

const MAX_KEYWORDS: usize = 50;
const MAX_KEYWORD_LEN: usize = 200;

/// A subscription's filter. An empty filter lets everything through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// At least one of these must occur (when the list is not empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// None of these may occur.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Items below this priority are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_priority: Option<Priority>,
}

impl Filter {
    pub fn validate(&self) -> Result<(), InputError> {
        for list in [&self.include, &self.exclude] {
            if list.len() > MAX_KEYWORDS {
                return Err(InputError::Filter(format!(
                    "at most {MAX_KEYWORDS} keywords per list"
                )));
            }
            for k in list {
                if words(k).is_empty() {
                    return Err(InputError::Filter(format!(
                        "keyword {k:?} has no letters or digits"
                    )));
                }
                if k.len() > MAX_KEYWORD_LEN {
                    return Err(InputError::Filter(format!(
                        "keywords are at most {MAX_KEYWORD_LEN} bytes"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether `n` passes this filter.
    pub fn matches(&self, n: &Notification) -> bool {
        if self.min_priority.is_some_and(|p| n.priority < p) {
            return false;
        }
        if self.include.is_empty() && self.exclude.is_empty() {
            return true;
        }
        let mut text = String::with_capacity(n.message.len() + 64);
        if let Some(t) = &n.title {
            text.push_str(t);
            text.push(' ');
        }
        text.push_str(&n.message);
        for t in &n.tags {
            text.push(' ');
            text.push_str(t);
        }
        let hay = words(&text);
        if self
            .exclude
            .iter()
            .any(|k| contains_phrase(&hay, &words(k)))
        {
            return false;
        }
        self.include.is_empty()
            || self
                .include
                .iter()
                .any(|k| contains_phrase(&hay, &words(k)))
    }
}

/// Lowercased runs of letters and digits.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn contains_phrase(hay: &[String], needle: &[String]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NotificationId;

    fn n(title: &str, msg: &str, p: Priority) -> Notification {
        Notification {
            id: NotificationId::new(0),
            time: 0,
            event: "message".into(),
            source: "s".into(),
            topic: None,
            title: Some(title.into()),
            message: msg.into(),
            priority: p,
            tags: vec![],
            click: None,
            actions: vec![],
            author: None,
        }
    }

    #[test]
    fn keywords_are_word_aware_and_case_insensitive() {
        let f = Filter {
            include: vec!["2br".into(), "new york".into()],
            exclude: vec!["sold".into()],
            min_priority: None,
        };
        assert!(f.matches(&n("Sunny 2BR flat", "", Priority::Default)));
        assert!(!f.matches(&n("Sunny 12br flat", "", Priority::Default)));
        assert!(f.matches(&n("", "loft in New  York!", Priority::Default)));
        assert!(!f.matches(&n("", "new jersey york", Priority::Default)));
        assert!(!f.matches(&n("2br", "SOLD", Priority::Default)));
        assert!(!f.matches(&n("1br", "", Priority::Default)));
    }

    #[test]
    fn min_priority_and_validation() {
        let f = Filter {
            min_priority: Some(Priority::High),
            ..Default::default()
        };
        assert!(!f.matches(&n("", "x", Priority::Default)));
        assert!(f.matches(&n("", "x", Priority::Urgent)));
        assert!(
            Filter {
                include: vec!["!!".into()],
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(Filter::default().validate().is_ok());
    }
}
