//! Per-resource presence folded into one availability per contact (the most available of
//! their resources), I/O-free. The routing side may keep one of these per connection; it
//! is cleared on [`Inbound::Disconnected`] because presence is unknown until the probes
//! after the reconnect are answered.

use std::collections::HashMap;

use crate::{BareJid, Inbound, Show};

/// Resources tracked per contact; presence from more is ignored (bounded memory).
pub const MAX_RESOURCES: usize = 32;

#[derive(Debug, Default)]
pub struct Presences {
    contacts: HashMap<BareJid, HashMap<String, Show>>,
}

impl Presences {
    pub fn new() -> Presences {
        Presences::default()
    }

    /// Takes an event; answers the contact and their new availability when it changed.
    pub fn apply(&mut self, event: &Inbound) -> Option<(BareJid, Show)> {
        match event {
            Inbound::Presence {
                jid,
                resource,
                show,
                ..
            } => {
                let before = self.show(jid);
                let resources = self.contacts.entry(jid.clone()).or_default();
                match (resource, show) {
                    // Unavailable for the whole account: every resource is gone.
                    (None, Show::Unavailable) => resources.clear(),
                    (Some(r), Show::Unavailable) => {
                        resources.remove(r);
                    }
                    (r, s) => {
                        let r = r.clone().unwrap_or_default();
                        if resources.len() < MAX_RESOURCES || resources.contains_key(&r) {
                            resources.insert(r, *s);
                        }
                    }
                }
                if resources.is_empty() {
                    self.contacts.remove(jid);
                }
                let after = self.show(jid);
                (after != before).then(|| (jid.clone(), after))
            }
            Inbound::SubscriptionRefused { jid } => {
                let before = self.show(jid);
                self.contacts.remove(jid);
                (before != Show::Unavailable).then(|| (jid.clone(), Show::Unavailable))
            }
            Inbound::Disconnected { .. } => {
                self.contacts.clear();
                None
            }
            _ => None,
        }
    }

    /// The most available show among the contact's resources.
    pub fn show(&self, jid: &BareJid) -> Show {
        self.contacts
            .get(jid)
            .and_then(|r| r.values().min().copied())
            .unwrap_or(Show::Unavailable)
    }

    /// Each resource and its show, sorted by resource.
    pub fn resources(&self, jid: &BareJid) -> Vec<(String, Show)> {
        let mut out: Vec<(String, Show)> = self
            .contacts
            .get(jid)
            .map(|r| r.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(res: Option<&str>, show: Show) -> Inbound {
        Inbound::Presence {
            jid: BareJid::parse("alice@example.org").unwrap(),
            resource: res.map(str::to_owned),
            show,
            status: None,
        }
    }

    #[test]
    fn most_available_resource_wins() {
        let alice = BareJid::parse("alice@example.org").unwrap();
        let mut ps = Presences::new();
        assert_eq!(ps.show(&alice), Show::Unavailable);
        assert_eq!(
            ps.apply(&p(Some("phone"), Show::Away)),
            Some((alice.clone(), Show::Away))
        );
        assert_eq!(
            ps.apply(&p(Some("pc"), Show::Available)),
            Some((alice.clone(), Show::Available))
        );
        assert_eq!(ps.apply(&p(Some("phone"), Show::Xa)), None);
        assert_eq!(
            ps.apply(&p(Some("pc"), Show::Unavailable)),
            Some((alice.clone(), Show::Xa))
        );
        assert_eq!(ps.resources(&alice), vec![("phone".to_owned(), Show::Xa)]);
        assert_eq!(
            ps.apply(&p(None, Show::Unavailable)),
            Some((alice.clone(), Show::Unavailable))
        );
        ps.apply(&p(Some("pc"), Show::Dnd));
        ps.apply(&Inbound::Disconnected {
            reason: "gone".into(),
        });
        assert_eq!(ps.show(&alice), Show::Unavailable);
    }

    #[test]
    fn resources_are_bounded() {
        let alice = BareJid::parse("alice@example.org").unwrap();
        let mut ps = Presences::new();
        for i in 0..100 {
            ps.apply(&p(Some(&format!("r{i}")), Show::Away));
        }
        assert_eq!(ps.resources(&alice).len(), MAX_RESOURCES);
    }
}
