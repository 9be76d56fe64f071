//! What a ready session does with stanzas, I/O-free: turns what the server sends into
//! [`Inbound`] events and the answers XMPP expects (subscription approval, probes,
//! disco#info, pings, receipts, errors for requests we do not serve), and builds what we
//! send (messages, presence, subscriptions, the confirming pings).
//!
//! Component and client mode differ in who keeps the roster: a component has none on the
//! server, so it answers probes itself, stamps `from` on everything and remembers approved
//! contacts here (seeded by the caller, who persists them); a client's server keeps the
//! roster, answers probes and broadcasts presence, and this side only asks for the roster.

use std::collections::HashSet;

use crate::jid::{BareJid, Jid};
use crate::negotiate::{NS_STANZAS, error_condition};
use crate::xml::{Element, NS_CLIENT};
use crate::{Inbound, Outbound, Show};

pub const NS_RECEIPTS: &str = "urn:xmpp:receipts";
pub const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";
pub const NS_REPLY: &str = "urn:xmpp:reply:0";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_ROSTER: &str = "jabber:iq:roster";
pub const NS_STYLING: &str = "urn:xmpp:styling:0";

/// A request the connection queues and sends in order (and re-sends after a reconnect
/// until the server has confirmed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Send(Outbound),
    Subscribe(BareJid),
    Unsubscribe(BareJid),
    Probe(BareJid),
    SetPresence(Show, Option<String>),
}

/// The session state that outlives connections: who we are, who approved us, our own
/// presence.
#[derive(Debug)]
pub struct Core {
    component: bool,
    /// Our JID: the component's domain, or the client's bound full JID.
    me: Jid,
    /// Contacts whose presence we receive (they approved our subscription).
    known: HashSet<BareJid>,
    show: Show,
    status: Option<String>,
    counter: u64,
    /// A random per-process prefix of the ids we make, so they do not repeat across
    /// restarts.
    id_prefix: String,
}

/// What handling one inbound stanza produced.
#[derive(Debug, Default)]
pub struct Handled {
    pub send: Vec<Element>,
    pub events: Vec<Inbound>,
    /// The id of an answered confirming ping.
    pub pong: Option<String>,
}

impl Core {
    pub fn new(component: bool, me: Jid, known: impl IntoIterator<Item = BareJid>) -> Core {
        let r: u32 = rand::random();
        Core {
            component,
            me,
            known: known.into_iter().collect(),
            show: Show::Available,
            status: None,
            counter: 0,
            id_prefix: format!("t{r:08x}"),
        }
    }

    pub fn set_me(&mut self, me: Jid) {
        self.me = me;
    }

    pub fn known(&self) -> impl Iterator<Item = &BareJid> {
        self.known.iter()
    }

    pub fn next_id(&mut self, kind: &str) -> String {
        self.counter += 1;
        format!("{}-{kind}-{}", self.id_prefix, self.counter)
    }

    fn me_str(&self) -> String {
        self.me.to_string()
    }

    /// What goes out once a session is ready. Component: our presence to every known
    /// contact and a probe for theirs. Client: the roster request (its answer brings the
    /// initial presence, see [`Core::handle`]).
    pub fn on_ready(&mut self) -> Vec<Element> {
        if self.component {
            let mut contacts: Vec<BareJid> = self.known.iter().cloned().collect();
            contacts.sort();
            let mut out = Vec::with_capacity(contacts.len() * 2);
            for c in contacts {
                out.push(self.presence_to(&c.clone().into(), None));
                out.push(self.presence_typed("probe", &c));
            }
            out
        } else {
            vec![
                Element::new("iq", NS_CLIENT)
                    .attr("type", "get")
                    .attr("id", self.next_id("roster"))
                    .child(Element::new("query", NS_ROSTER)),
            ]
        }
    }

    /// Our own presence (available with our show/status; `to` set for a component).
    fn presence_to(&self, to: &Jid, from: Option<&str>) -> Element {
        let mut p = Element::new("presence", NS_CLIENT);
        if self.component {
            p = p
                .attr(
                    "from",
                    from.map(str::to_owned).unwrap_or_else(|| self.me_str()),
                )
                .attr("to", to.to_string());
        }
        if self.show == Show::Unavailable {
            p.set_attr("type", "unavailable");
        } else if let Some(s) = self.show.as_xml() {
            p = p.child(Element::new("show", NS_CLIENT).text(s));
        }
        if let Some(status) = &self.status {
            p = p.child(Element::new("status", NS_CLIENT).text(status.clone()));
        }
        p
    }

    /// A broadcast of our presence (client) or one to each known contact (component).
    fn broadcast_presence(&self) -> Vec<Element> {
        if self.component {
            let mut contacts: Vec<&BareJid> = self.known.iter().collect();
            contacts.sort();
            contacts
                .into_iter()
                .map(|c| self.presence_to(&c.clone().into(), None))
                .collect()
        } else {
            vec![self.presence_to(&self.me.clone(), None)]
        }
    }

    /// What a component says when it goes away: unavailable to every known contact.
    pub fn goodbye(&mut self) -> Vec<Element> {
        self.show = Show::Unavailable;
        self.status = None;
        self.broadcast_presence()
    }

    fn presence_typed(&self, kind: &str, to: &BareJid) -> Element {
        let mut p = Element::new("presence", NS_CLIENT)
            .attr("type", kind)
            .attr("to", to.to_string());
        if self.component {
            p.set_attr("from", self.me_str());
        }
        p
    }

    /// The stanzas for a queued request.
    pub fn command(&mut self, cmd: &Cmd) -> Vec<Element> {
        match cmd {
            Cmd::Send(m) => vec![self.message(m)],
            Cmd::Subscribe(jid) => vec![self.presence_typed("subscribe", jid)],
            Cmd::Unsubscribe(jid) => {
                self.known.remove(jid);
                if self.component {
                    vec![
                        self.presence_typed("unsubscribe", jid),
                        self.presence_typed("unsubscribed", jid),
                    ]
                } else {
                    // Removing the roster item cancels both directions (RFC 6121 2.5).
                    vec![
                        Element::new("iq", NS_CLIENT)
                            .attr("type", "set")
                            .attr("id", self.next_id("unsub"))
                            .child(
                                Element::new("query", NS_ROSTER).child(
                                    Element::new("item", NS_ROSTER)
                                        .attr("jid", jid.to_string())
                                        .attr("subscription", "remove"),
                                ),
                            ),
                    ]
                }
            }
            Cmd::Probe(jid) => vec![self.presence_typed("probe", jid)],
            Cmd::SetPresence(show, status) => {
                self.show = *show;
                self.status = status.clone();
                self.broadcast_presence()
            }
        }
    }

    pub fn message(&self, m: &Outbound) -> Element {
        let mut msg = Element::new("message", NS_CLIENT)
            .attr("type", "chat")
            .attr("to", m.to.to_string())
            .attr("id", m.id.clone());
        if self.component {
            let from = match &m.from_node {
                Some(node) => format!("{node}@{}", self.me.bare().domain()),
                None => self.me_str(),
            };
            msg.set_attr("from", from);
        }
        msg = msg.child(Element::new("body", NS_CLIENT).text(m.body.clone()));
        if m.request_receipt {
            msg = msg.child(Element::new("request", NS_RECEIPTS));
        }
        if m.markable {
            msg = msg.child(Element::new("markable", NS_MARKERS));
        }
        msg
    }

    /// A ping through our server: a keepalive, and the confirmation that everything sent
    /// before it was processed (a server handles one stream's stanzas in order). A client
    /// pings its server; a component pings itself through the server (it answers pings),
    /// which needs no knowledge of the server's own domain.
    pub fn ping(&mut self) -> (String, Element) {
        let id = self.next_id("ping");
        let mut iq = Element::new("iq", NS_CLIENT)
            .attr("type", "get")
            .attr("id", id.clone())
            .attr("to", self.me.bare().domain().to_owned())
            .child(Element::new("ping", NS_PING));
        if self.component {
            iq.set_attr("from", self.me_str());
        }
        (id, iq)
    }

    pub fn handle(&mut self, el: &Element) -> Handled {
        let mut h = Handled::default();
        if el.ns != NS_CLIENT {
            return h;
        }
        match el.name.as_str() {
            "presence" => self.on_presence(el, &mut h),
            "message" => self.on_message(el, &mut h),
            "iq" => self.on_iq(el, &mut h),
            _ => {}
        }
        h
    }

    fn on_presence(&mut self, el: &Element, h: &mut Handled) {
        let Some(from) = el.get_attr("from").and_then(|f| Jid::parse(f).ok()) else {
            return;
        };
        let bare = from.bare().clone();
        if bare == *self.me.bare() {
            // Our own presence reflected (client mode), or our other resources.
            return;
        }
        let to_attr = el.get_attr("to").map(str::to_owned);
        match el.get_attr("type").unwrap_or("") {
            "" | "unavailable" => {
                let show = if el.get_attr("type") == Some("unavailable") {
                    Show::Unavailable
                } else {
                    el.find("show", NS_CLIENT)
                        .map(|s| Show::from_xml(s.text_content().trim()))
                        .unwrap_or(Show::Available)
                };
                let status = el
                    .find("status", NS_CLIENT)
                    .map(|s| s.text_content().chars().take(MAX_STATUS_CHARS).collect())
                    .filter(|s: &String| !s.is_empty());
                h.events.push(Inbound::Presence {
                    jid: bare,
                    resource: from.resource().map(str::to_owned),
                    show,
                    status,
                });
            }
            "subscribe" => {
                // Auto-approve, and ask back if we do not follow them yet.
                let mut approve = Element::new("presence", NS_CLIENT)
                    .attr("type", "subscribed")
                    .attr("to", bare.to_string());
                if self.component {
                    approve.set_attr("from", to_attr.clone().unwrap_or_else(|| self.me_str()));
                }
                h.send.push(approve);
                if self.component {
                    // A client's server sends our presence after the approval itself.
                    h.send
                        .push(self.presence_to(&bare.clone().into(), to_attr.as_deref()));
                }
                if !self.known.contains(&bare) {
                    h.send.push(self.presence_typed("subscribe", &bare));
                }
                h.events.push(Inbound::SubscribeRequest { jid: bare });
            }
            "subscribed" => {
                self.known.insert(bare.clone());
                h.events.push(Inbound::SubscriptionApproved { jid: bare });
            }
            "unsubscribed" => {
                self.known.remove(&bare);
                h.events.push(Inbound::SubscriptionRefused { jid: bare });
            }
            // They stop following us; a component tells them we are gone (for a client,
            // its server does).
            "unsubscribe" if self.component => {
                let mut p = Element::new("presence", NS_CLIENT)
                    .attr("type", "unavailable")
                    .attr("to", bare.to_string());
                p.set_attr("from", to_attr.unwrap_or_else(|| self.me_str()));
                h.send.push(p);
            }
            // A client's server answers probes; a component answers them itself.
            "probe" if self.component => {
                h.send
                    .push(self.presence_to(&bare.into(), to_attr.as_deref()));
            }
            "error" => {
                let (condition, text) = error_condition(el);
                h.events.push(Inbound::Error {
                    to: from,
                    id: el.get_attr("id").map(str::to_owned),
                    condition,
                    text,
                });
            }
            _ => {}
        }
    }

    fn on_message(&mut self, el: &Element, h: &mut Handled) {
        let Some(from) = el.get_attr("from").and_then(|f| Jid::parse(f).ok()) else {
            return;
        };
        let to = el
            .get_attr("to")
            .and_then(|t| Jid::parse(t).ok())
            .unwrap_or_else(|| self.me.clone());
        let id = el.get_attr("id").map(str::to_owned);
        match el.get_attr("type").unwrap_or("normal") {
            "error" => {
                let (condition, text) = error_condition(el);
                h.events.push(Inbound::Error {
                    to: from,
                    id,
                    condition,
                    text,
                });
                return;
            }
            "groupchat" => return,
            _ => {}
        }
        if let Some(r) = el.find("received", NS_RECEIPTS) {
            // XEP-0184 puts the id on <received/>; very old clients left it off and
            // reused the message's id.
            if let Some(rid) = r.get_attr("id").map(str::to_owned).or(id.clone()) {
                h.events.push(Inbound::Receipt {
                    from: from.clone(),
                    id: rid,
                });
            }
        }
        if let Some(r) = el.find("received", NS_MARKERS)
            && let Some(rid) = r.get_attr("id")
        {
            h.events.push(Inbound::Receipt {
                from: from.clone(),
                id: rid.to_owned(),
            });
        }
        for marker in ["displayed", "acknowledged"] {
            if let Some(d) = el.find(marker, NS_MARKERS)
                && let Some(did) = d.get_attr("id")
            {
                h.events.push(Inbound::Displayed {
                    from: from.clone(),
                    id: did.to_owned(),
                });
            }
        }
        let Some(body) = el.find("body", NS_CLIENT) else {
            return;
        };
        let body: String = body.text_content().chars().take(MAX_BODY_CHARS).collect();
        if el.find("request", NS_RECEIPTS).is_some()
            && let Some(mid) = &id
        {
            let mut receipt = Element::new("message", NS_CLIENT)
                .attr("to", from.to_string())
                .attr("id", self.next_id("rcpt"))
                .child(Element::new("received", NS_RECEIPTS).attr("id", mid.clone()));
            if self.component {
                receipt.set_attr("from", to.to_string());
            }
            h.send.push(receipt);
        }
        let reply_to_id = el
            .find("reply", NS_REPLY)
            .and_then(|r| r.get_attr("id"))
            .map(str::to_owned);
        h.events.push(Inbound::Message {
            from,
            to,
            body,
            id,
            reply_to_id,
        });
    }

    fn on_iq(&mut self, el: &Element, h: &mut Handled) {
        let kind = el.get_attr("type").unwrap_or("");
        let id = el.get_attr("id").unwrap_or("").to_owned();
        if kind == "result" || kind == "error" {
            if id.contains("-ping-") {
                h.pong = Some(id);
            } else if id.contains("-roster-") && kind == "result" {
                self.on_roster(el, h);
            }
            return;
        }
        if kind != "get" && kind != "set" {
            return;
        }
        let from = el.get_attr("from").map(str::to_owned);
        let mut reply = Element::new("iq", NS_CLIENT)
            .attr("type", "result")
            .attr("id", id);
        if let Some(f) = &from {
            reply.set_attr("to", f.clone());
        }
        if self.component {
            reply.set_attr(
                "from",
                el.get_attr("to")
                    .map(str::to_owned)
                    .unwrap_or_else(|| self.me_str()),
            );
        }
        let payload = el.elements().next();
        match (kind, payload) {
            ("get", Some(p)) if p.is("ping", NS_PING) => {}
            ("get", Some(p)) if p.is("query", NS_DISCO_INFO) && p.get_attr("node").is_none() => {
                let mut query = Element::new("query", NS_DISCO_INFO).child(
                    Element::new("identity", NS_DISCO_INFO)
                        .attr("category", "client")
                        .attr("type", "bot")
                        .attr("name", "tidings"),
                );
                for feature in [
                    NS_DISCO_INFO,
                    NS_PING,
                    NS_RECEIPTS,
                    NS_MARKERS,
                    NS_REPLY,
                    NS_STYLING,
                ] {
                    query =
                        query.child(Element::new("feature", NS_DISCO_INFO).attr("var", feature));
                }
                reply = reply.child(query);
            }
            ("set", Some(p))
                if !self.component
                    && p.is("query", NS_ROSTER)
                    && from.as_deref().is_none_or(|f| {
                        Jid::parse(f).is_ok_and(|j| j.bare() == self.me.bare())
                    }) =>
            {
                // A roster push: acknowledged; subscription changes arrive as presence.
            }
            _ => {
                reply.set_attr("type", "error");
                reply = reply.child(
                    Element::new("error", NS_CLIENT)
                        .attr("type", "cancel")
                        .child(Element::new("service-unavailable", NS_STANZAS)),
                );
            }
        }
        h.send.push(reply);
    }

    /// The roster (client mode): contacts we follow are known (and reported as approved,
    /// once per connection), known contacts missing from it are asked again, then our
    /// initial presence goes out, which makes the server probe our contacts for us.
    fn on_roster(&mut self, el: &Element, h: &mut Handled) {
        let mut in_roster = HashSet::new();
        if let Some(q) = el.find("query", NS_ROSTER) {
            for item in q.elements().filter(|e| e.name == "item") {
                let Some(jid) = item.get_attr("jid").and_then(|j| BareJid::parse(j).ok()) else {
                    continue;
                };
                in_roster.insert(jid.clone());
                if matches!(item.get_attr("subscription"), Some("to" | "both")) {
                    self.known.insert(jid.clone());
                    h.events.push(Inbound::SubscriptionApproved { jid });
                }
            }
        }
        let mut missing: Vec<BareJid> = self
            .known
            .iter()
            .filter(|j| !in_roster.contains(*j))
            .cloned()
            .collect();
        missing.sort();
        for jid in missing {
            h.send.push(self.presence_typed("subscribe", &jid));
        }
        h.send.push(self.presence_to(&self.me.clone(), None));
    }
}

/// Inbound bodies are cut to this many characters.
pub const MAX_BODY_CHARS: usize = 16_384;
/// Inbound status texts are cut to this many characters.
pub const MAX_STATUS_CHARS: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse_element;

    fn el(xml: &str) -> Element {
        parse_element(xml.as_bytes(), &[]).unwrap()
    }

    fn component() -> Core {
        Core::new(
            true,
            Jid::parse("tidings.example.org").unwrap(),
            [BareJid::parse("bob@example.org").unwrap()],
        )
    }

    fn xml(els: &[Element]) -> Vec<String> {
        els.iter().map(Element::to_stanza_xml).collect()
    }

    #[test]
    fn component_start_presence_and_probes() {
        let mut c = component();
        assert_eq!(
            xml(&c.on_ready()),
            vec![
                "<presence from='tidings.example.org' to='bob@example.org'/>",
                "<presence type='probe' to='bob@example.org' from='tidings.example.org'/>",
            ]
        );
    }

    #[test]
    fn component_approves_and_asks_back() {
        let mut c = component();
        let h = c.handle(&el(
            "<presence type='subscribe' from='alice@example.org' to='tidings.example.org'/>",
        ));
        assert_eq!(
            xml(&h.send),
            vec![
                "<presence type='subscribed' to='alice@example.org' from='tidings.example.org'/>",
                "<presence from='tidings.example.org' to='alice@example.org'/>",
                "<presence type='subscribe' to='alice@example.org' from='tidings.example.org'/>",
            ]
        );
        let alice = BareJid::parse("alice@example.org").unwrap();
        assert_eq!(
            h.events,
            vec![Inbound::SubscribeRequest { jid: alice.clone() }]
        );
        let h = c.handle(&el(
            "<presence type='subscribed' from='alice@example.org' to='tidings.example.org'/>",
        ));
        assert_eq!(
            h.events,
            vec![Inbound::SubscriptionApproved { jid: alice.clone() }]
        );
        assert!(c.known().any(|j| *j == alice));
        // Already followed: no second request.
        let h = c.handle(&el(
            "<presence type='subscribe' from='alice@example.org' to='tidings.example.org'/>",
        ));
        assert_eq!(h.send.len(), 2);
        let h = c.handle(&el(
            "<presence type='unsubscribed' from='alice@example.org'/>",
        ));
        assert_eq!(
            h.events,
            vec![Inbound::SubscriptionRefused { jid: alice.clone() }]
        );
        assert!(!c.known().any(|j| *j == alice));
    }

    #[test]
    fn presence_per_resource() {
        let mut c = component();
        let h = c.handle(&el("<presence from='Bob@example.org/phone'><show>away</show><status>lunch</status></presence>"));
        assert_eq!(
            h.events,
            vec![Inbound::Presence {
                jid: BareJid::parse("bob@example.org").unwrap(),
                resource: Some("phone".into()),
                show: Show::Away,
                status: Some("lunch".into())
            }]
        );
        let h = c.handle(&el("<presence from='bob@example.org/pc'/>"));
        assert!(matches!(
            &h.events[0],
            Inbound::Presence {
                show: Show::Available,
                ..
            }
        ));
        let h = c.handle(&el("<presence type='unavailable' from='bob@example.org'/>"));
        assert!(matches!(
            &h.events[0],
            Inbound::Presence {
                show: Show::Unavailable,
                resource: None,
                ..
            }
        ));
        for (s, show) in [
            ("chat", Show::Chat),
            ("xa", Show::Xa),
            ("dnd", Show::Dnd),
            ("bogus", Show::Available),
        ] {
            let h = c.handle(&el(&format!(
                "<presence from='bob@example.org/x'><show>{s}</show></presence>"
            )));
            assert!(
                matches!(&h.events[0], Inbound::Presence { show: got, .. } if *got == show),
                "{s}"
            );
        }
    }

    #[test]
    fn answers_probes_disco_and_pings() {
        let mut c = component();
        let h = c.handle(&el(
            "<presence type='probe' from='alice@example.org' to='tidings.example.org'/>",
        ));
        assert_eq!(
            xml(&h.send),
            vec!["<presence from='tidings.example.org' to='alice@example.org'/>"]
        );
        let h = c.handle(&el("<iq type='get' id='d1' from='alice@example.org/pc' to='tidings.example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
        let reply = &h.send[0];
        assert_eq!(reply.get_attr("type"), Some("result"));
        assert_eq!(reply.get_attr("to"), Some("alice@example.org/pc"));
        assert_eq!(reply.get_attr("from"), Some("tidings.example.org"));
        let q = reply.find("query", NS_DISCO_INFO).unwrap();
        let features: Vec<&str> = q.elements().filter_map(|f| f.get_attr("var")).collect();
        for f in [NS_RECEIPTS, NS_MARKERS, NS_REPLY] {
            assert!(features.contains(&f), "{f}");
        }
        let h = c.handle(&el("<iq type='get' id='p1' from='example.org' to='tidings.example.org'><ping xmlns='urn:xmpp:ping'/></iq>"));
        assert_eq!(
            xml(&h.send),
            vec!["<iq type='result' id='p1' to='example.org' from='tidings.example.org'/>"]
        );
        let h = c.handle(&el("<iq type='get' id='v1' from='a@example.org/x' to='tidings.example.org'><query xmlns='jabber:iq:version'/></iq>"));
        assert!(xml(&h.send)[0].contains("service-unavailable"));
        // Results are never answered.
        let h = c.handle(&el("<iq type='result' id='zzz' from='a@example.org/x'/>"));
        assert!(h.send.is_empty());
    }

    #[test]
    fn messages_receipts_markers_and_errors() {
        let mut c = component();
        let out = c.message(&Outbound {
            to: Jid::parse("alice@example.org").unwrap(),
            body: "*Disk* full".into(),
            id: "n-1".into(),
            request_receipt: true,
            markable: true,
            from_node: None,
        });
        assert_eq!(
            out.to_stanza_xml(),
            "<message type='chat' to='alice@example.org' id='n-1' from='tidings.example.org'><body>*Disk* full</body><request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/></message>"
        );
        let alice = Jid::parse("alice@example.org/pc").unwrap();
        let h = c.handle(&el("<message from='alice@example.org/pc' to='tidings.example.org' id='r1'><received xmlns='urn:xmpp:receipts' id='n-1'/></message>"));
        assert_eq!(
            h.events,
            vec![Inbound::Receipt {
                from: alice.clone(),
                id: "n-1".into()
            }]
        );
        let h = c.handle(&el("<message from='alice@example.org/pc' to='tidings.example.org'><displayed xmlns='urn:xmpp:chat-markers:0' id='n-1'/></message>"));
        assert_eq!(
            h.events,
            vec![Inbound::Displayed {
                from: alice.clone(),
                id: "n-1".into()
            }]
        );
        let h = c.handle(&el("<message type='chat' from='alice@example.org/pc' to='ops@tidings.example.org' id='m7'><body>ack</body><request xmlns='urn:xmpp:receipts'/><reply xmlns='urn:xmpp:reply:0' to='tidings.example.org' id='n-1'/></message>"));
        assert_eq!(
            h.events,
            vec![Inbound::Message {
                from: alice.clone(),
                to: Jid::parse("ops@tidings.example.org").unwrap(),
                body: "ack".into(),
                id: Some("m7".into()),
                reply_to_id: Some("n-1".into()),
            }]
        );
        let receipt = xml(&h.send);
        assert_eq!(receipt.len(), 1);
        assert!(
            receipt[0].contains("<received xmlns='urn:xmpp:receipts' id='m7'/>"),
            "{receipt:?}"
        );
        assert!(
            receipt[0].contains("from='ops@tidings.example.org'"),
            "{receipt:?}"
        );
        let h = c.handle(&el("<message type='error' from='nobody@example.org' id='n-2'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"));
        assert_eq!(
            h.events,
            vec![Inbound::Error {
                to: Jid::parse("nobody@example.org").unwrap(),
                id: Some("n-2".into()),
                condition: "item-not-found".into(),
                text: None
            }]
        );
        // Chat states alone are no message.
        let h = c.handle(&el("<message from='alice@example.org/pc'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"));
        assert!(h.events.is_empty());
    }

    #[test]
    fn client_roster_then_presence() {
        let me = Jid::parse("bot@example.org/tidings").unwrap();
        let mut c = Core::new(
            false,
            me,
            [
                BareJid::parse("alice@example.org").unwrap(),
                BareJid::parse("carol@example.org").unwrap(),
            ],
        );
        let start = c.on_ready();
        let id = start[0].get_attr("id").unwrap().to_owned();
        let h = c.handle(&el(&format!("<iq type='result' id='{id}'><query xmlns='jabber:iq:roster'><item jid='alice@example.org' subscription='both'/><item jid='dave@example.org' subscription='to'/></query></iq>")));
        assert_eq!(
            h.events,
            vec![
                Inbound::SubscriptionApproved {
                    jid: BareJid::parse("alice@example.org").unwrap()
                },
                Inbound::SubscriptionApproved {
                    jid: BareJid::parse("dave@example.org").unwrap()
                },
            ]
        );
        assert_eq!(
            xml(&h.send),
            vec![
                "<presence type='subscribe' to='carol@example.org'/>",
                "<presence/>"
            ]
        );
        // Our own reflected presence is no contact's.
        assert!(
            c.handle(&el("<presence from='bot@example.org/tidings'/>"))
                .events
                .is_empty()
        );
        // A roster push from our server is acknowledged; one from elsewhere is refused.
        let h = c.handle(&el("<iq type='set' id='push1'><query xmlns='jabber:iq:roster'><item jid='alice@example.org' subscription='both'/></query></iq>"));
        assert_eq!(xml(&h.send), vec!["<iq type='result' id='push1'/>"]);
        let h = c.handle(&el("<iq type='set' id='push2' from='evil@example.net'><query xmlns='jabber:iq:roster'/></iq>"));
        assert!(xml(&h.send)[0].contains("type='error'"));
    }

    #[test]
    fn pings_confirm() {
        let mut c = component();
        let (id, iq) = c.ping();
        assert_eq!(iq.get_attr("to"), Some("tidings.example.org"));
        let h = c.handle(&el(&format!(
            "<iq type='result' id='{id}' from='example.org'/>"
        )));
        assert_eq!(h.pong, Some(id.clone()));
        let h = c.handle(&el(&format!(
            "<iq type='error' id='{id}' from='example.org'/>"
        )));
        assert_eq!(h.pong, Some(id));
    }
}
