//! Routing rules: a user's ordered delivery policy, as data. The first rule whose `match`
//! accepts an item decides where it goes:
//!
//! ```json
//! {"rules": [{"name": "alerts",
//!             "match": {"min_priority": "high", "tags": ["prod"]},
//!             "steps": [{"to": "ops hook"},
//!                       {"to": "mail", "after": "10m"},
//!                       {"to": "phone", "after": "2m", "min_priority": "urgent"}]}]}
//! ```
//!
//! A step without `after` sends at once; a step with `after` is an **escalation**: sent when
//! that time has passed unless the item was acknowledged first. Steps name destinations; a
//! step's `min_priority` narrows it further. Without rules, or when no rule matches, every
//! destination takes what its own options accept (the default). Every decision is written to
//! the item's delivery record with the rule and step that made it.
//!
//! This module is pure: parsing, validation and the plan for one item. The user avatar owns
//! the rules, runs the plan, and keeps escalations as durable reminders.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{Notification, Priority};

use crate::destinations::{Destination, Target};
use crate::{Error, Result};

/// Most rules a user may have, and steps per rule.
pub const MAX_RULES: usize = 50;
pub const MAX_STEPS: usize = 10;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default, rename = "match")]
    pub when: Match,
    pub steps: Vec<Step>,
}

/// What a rule applies to; every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Match {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_priority: Option<Priority>,
    /// Items from one of these subscriptions (ids).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    /// Items with at least one of these tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// A destination's name.
    pub to: String,
    /// Escalation delay (`30s`, `10m`, `2h`, `1d`); absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_priority: Option<Priority>,
}

impl Step {
    fn delay(&self) -> Result<Option<Duration>> {
        self.after
            .as_deref()
            .map(|a| crate::schedule::parse_span("after", a))
            .transpose()
    }
}

impl Match {
    fn accepts(&self, n: &Notification, subscription: Option<&str>) -> bool {
        self.min_priority.is_none_or(|p| n.priority >= p)
            && (self.subscriptions.is_empty()
                || subscription.is_some_and(|s| self.subscriptions.iter().any(|x| x == s)))
            && (self.tags.is_empty()
                || n.tags
                    .iter()
                    .any(|t| self.tags.iter().any(|x| x.eq_ignore_ascii_case(t))))
    }
}

/// An escalation the plan schedules.
#[derive(Debug, Clone)]
pub struct Escalation {
    pub step: usize,
    pub destination: Arc<Destination>,
    pub after: Duration,
    pub reason: String,
}

/// Where one item goes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub now: Vec<Target>,
    pub later: Vec<Escalation>,
}

impl Rules {
    /// Checks the rules against the user's destinations (steps name existing ones).
    pub fn validate(&self, destinations: &[Arc<Destination>]) -> Result<()> {
        if self.rules.len() > MAX_RULES {
            return Err(Error::Invalid(format!("at most {MAX_RULES} rules")));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("rule {} ({:?})", i + 1, r.name);
            if r.name.trim().is_empty() || r.name.chars().count() > 64 {
                return Err(Error::Invalid(format!("{at}: a name of 1-64 characters")));
            }
            if r.steps.is_empty() || r.steps.len() > MAX_STEPS {
                return Err(Error::Invalid(format!("{at}: 1-{MAX_STEPS} steps")));
            }
            if r.when.subscriptions.len() > 100 || r.when.tags.len() > 100 {
                return Err(Error::Invalid(format!(
                    "{at}: at most 100 subscriptions and tags"
                )));
            }
            for (j, s) in r.steps.iter().enumerate() {
                let at = format!("{at}, step {}", j + 1);
                s.delay()
                    .map_err(|e| Error::Invalid(format!("{at}: {e}")))?;
                if !destinations.iter().any(|d| d.name == s.to) {
                    let names: Vec<&str> = destinations.iter().map(|d| d.name.as_str()).collect();
                    return Err(Error::Invalid(format!(
                        "{at}: no destination named {:?} (yours: {})",
                        s.to,
                        if names.is_empty() {
                            "none yet".to_owned()
                        } else {
                            names.join(", ")
                        }
                    )));
                }
            }
        }
        Ok(())
    }

    /// The plan for `n`, or `None` when no rule matches (the default applies).
    pub fn plan(
        &self,
        n: &Notification,
        subscription: Option<&str>,
        destinations: &[Arc<Destination>],
    ) -> Option<Plan> {
        let rule = self
            .rules
            .iter()
            .find(|r| r.when.accepts(n, subscription))?;
        let mut plan = Plan::default();
        for (i, s) in rule.steps.iter().enumerate() {
            let Some(d) = destinations.iter().find(|d| d.name == s.to) else {
                continue;
            };
            if s.min_priority.is_some_and(|p| n.priority < p) {
                continue;
            }
            // The destination's own options (enabled, verified, minimum priority) still hold.
            if d.accepts(n, subscription).is_none() {
                continue;
            }
            let step = format!("rule {:?}, step {}", rule.name, i + 1);
            match s.delay().ok().flatten() {
                None => plan.now.push(Target {
                    destination: d.clone(),
                    reason: format!("{step}: send to {:?} at once", d.name),
                }),
                Some(after) => plan.later.push(Escalation {
                    step: i,
                    destination: d.clone(),
                    after,
                    reason: format!(
                        "{step}: escalate to {:?} after {} unless acknowledged",
                        d.name,
                        s.after.as_deref().unwrap_or_default()
                    ),
                }),
            }
        }
        Some(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::DestinationOptions;
    use tidings_core::NotificationId;
    use tidings_sinks::DestinationConfig;

    fn dest(name: &str) -> Arc<Destination> {
        let config = DestinationConfig::parse_url("json://hooks.example.org/x").unwrap();
        Arc::new(Destination {
            id: format!("dst_{name}"),
            user_id: 1,
            name: name.into(),
            kind: config.kind().into(),
            config: Ok(config),
            options: DestinationOptions::default(),
            verified_at: None,
            created_at: 0,
        })
    }

    fn note(priority: Priority, tags: &[&str]) -> Notification {
        Notification {
            id: NotificationId::new(1),
            time: 1,
            event: "message".into(),
            source: "topic:x".into(),
            topic: Some("x".into()),
            title: None,
            message: "m".into(),
            priority,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            click: None,
            actions: vec![],
            author: None,
        }
    }

    fn rules(json: &str) -> Rules {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_first_matching_rule_plans_sends_and_escalations() {
        let ds = vec![dest("hook"), dest("mail"), dest("phone")];
        let r = rules(
            r#"{"rules": [
                {"name": "prod", "match": {"tags": ["prod"], "min_priority": "high"},
                 "steps": [{"to": "hook"}, {"to": "mail", "after": "10m"},
                           {"to": "phone", "after": "2m", "min_priority": "urgent"}]},
                {"name": "rest", "steps": [{"to": "hook"}]}]}"#,
        );
        r.validate(&ds).unwrap();
        let p = r.plan(&note(Priority::High, &["prod"]), None, &ds).unwrap();
        assert_eq!(p.now.len(), 1);
        assert_eq!(p.now[0].destination.name, "hook");
        assert!(
            p.now[0].reason.contains("rule \"prod\", step 1"),
            "{}",
            p.now[0].reason
        );
        assert_eq!(p.later.len(), 1, "phone needs urgent");
        assert_eq!(p.later[0].after, Duration::from_secs(600));
        assert_eq!(p.later[0].step, 1);
        let p = r
            .plan(&note(Priority::Urgent, &["PROD"]), None, &ds)
            .unwrap();
        assert_eq!(p.later.len(), 2);
        // Not prod: the second rule, nothing later.
        let p = r
            .plan(&note(Priority::Urgent, &["dev"]), None, &ds)
            .unwrap();
        assert!(p.now[0].reason.contains("\"rest\""));
        assert!(p.later.is_empty());
        // No rule at all matches: the default applies.
        let only = rules(
            r#"{"rules": [{"name": "x", "match": {"min_priority": "urgent"}, "steps": [{"to": "hook"}]}]}"#,
        );
        assert!(only.plan(&note(Priority::Low, &[]), None, &ds).is_none());
    }

    #[test]
    fn bad_rules_are_refused_with_where_and_why() {
        let ds = vec![dest("hook")];
        let err = |j: &str| rules(j).validate(&ds).unwrap_err().to_string();
        assert!(
            err(r#"{"rules": [{"name": "a", "steps": [{"to": "nope"}]}]}"#)
                .contains("no destination named \"nope\" (yours: hook)")
        );
        assert!(
            err(r#"{"rules": [{"name": "a", "steps": [{"to": "hook", "after": "soon"}]}]}"#)
                .contains("step 1")
        );
        assert!(err(r#"{"rules": [{"name": "a", "steps": []}]}"#).contains("1-10 steps"));
        assert!(err(r#"{"rules": [{"name": " ", "steps": [{"to": "hook"}]}]}"#).contains("name"));
        assert!(
            serde_json::from_str::<Rules>(
                r#"{"rules": [{"name": "a", "steps": [{"to": "hook", "when": "x"}]}]}"#
            )
            .is_err()
        );
    }
}
