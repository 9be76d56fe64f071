//! Stream negotiation, I/O-free: what to send for each frame the server sends, from the
//! stream header to a ready session.
//!
//! - Component (XEP-0114): header in `jabber:component:accept`, then
//!   `<handshake>` = hex(SHA-1(stream id + secret)), then the server's empty `<handshake/>`.
//! - Client (RFC 6120): header, STARTTLS (required unless the operator said otherwise),
//!   SASL (SCRAM-SHA-256, SCRAM-SHA-1, or PLAIN once encrypted), stream restart, resource
//!   binding, and the legacy session establishment where the server still requires it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::{Digest, Sha1};

use crate::jid::{BareJid, Jid};
use crate::sasl::{Mechanism, Scram};
use crate::xml::{self, Element, Frame, NS_CLIENT, NS_COMPONENT, NS_STREAM};
use crate::{ClientTls, Error};

pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Write this.
    Send(String),
    /// Start TLS on the connection now, then send [`Negotiator::header`] on a fresh framer.
    StartTls,
    /// Restart the stream: a fresh framer, and [`Negotiator::header`] sent.
    Restart,
    /// The session is ready; this is our JID in it.
    Ready(Jid),
}

enum Kind {
    Component {
        domain: BareJid,
        secret: String,
    },
    Client {
        jid: Jid,
        password: String,
        tls_mode: ClientTls,
        nonce: String,
    },
}

#[derive(Debug)]
enum State {
    Header,
    Features,
    Handshake,
    StartTls,
    Auth {
        scram: Option<Box<Scram>>,
        verified: bool,
    },
    Bind,
    Session(Jid),
    Done,
}

pub struct Negotiator {
    kind: Kind,
    state: State,
    tls: bool,
    authenticated: bool,
    session_needed: bool,
}

/// hex(SHA-1(stream id + secret)), XEP-0114's handshake.
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let mut h = Sha1::new();
    h.update(stream_id.as_bytes());
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

impl Negotiator {
    pub fn component(domain: BareJid, secret: String) -> Negotiator {
        Negotiator {
            kind: Kind::Component { domain, secret },
            state: State::Header,
            tls: false,
            authenticated: false,
            session_needed: false,
        }
    }

    /// `nonce`: the SCRAM client nonce ([`Scram::random_nonce`] in use).
    pub fn client(jid: Jid, password: String, tls_mode: ClientTls, nonce: String) -> Negotiator {
        Negotiator {
            kind: Kind::Client {
                jid,
                password,
                tls_mode,
                nonce,
            },
            state: State::Header,
            tls: false,
            authenticated: false,
            session_needed: false,
        }
    }

    /// The stream header to send (at the start and after each restart).
    pub fn header(&mut self) -> String {
        self.state = State::Header;
        match &self.kind {
            Kind::Component { domain, .. } => {
                xml::stream_header(NS_COMPONENT, &domain.to_string(), false)
            }
            Kind::Client { jid, .. } => xml::stream_header(NS_CLIENT, jid.bare().domain(), true),
        }
    }

    /// TLS is established on the connection.
    pub fn tls_established(&mut self) {
        self.tls = true;
    }

    pub fn on_frame(&mut self, frame: Frame) -> Result<Vec<Step>, Error> {
        let el = match frame {
            Frame::Close => return Err(Error::Stream("the server closed the stream".into())),
            Frame::Open(header) => {
                if !matches!(self.state, State::Header) {
                    return Err(Error::Protocol("a second stream header".into()));
                }
                return self.on_header(&header);
            }
            Frame::Element(el) => el,
        };
        if el.is("error", NS_STREAM) {
            return Err(Error::Stream(stream_error_text(&el)));
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Handshake if el.name == "handshake" => {
                let Kind::Component { domain, .. } = &self.kind else {
                    unreachable!("handshake state is only entered by components")
                };
                Ok(vec![Step::Ready(domain.clone().into())])
            }
            State::Features if el.is("features", NS_STREAM) => self.on_features(&el),
            State::StartTls if el.is("proceed", NS_TLS) => Ok(vec![Step::StartTls]),
            State::StartTls => Err(Error::Tls("the server refused STARTTLS".into())),
            State::Auth { scram, verified } => self.on_auth(&el, scram, verified),
            State::Bind if el.name == "iq" && el.get_attr("id") == Some("bind") => {
                if el.get_attr("type") != Some("result") {
                    return Err(Error::Protocol(format!(
                        "resource binding failed: {}",
                        error_condition(&el).0
                    )));
                }
                let jid = el
                    .find("bind", NS_BIND)
                    .and_then(|b| b.find("jid", NS_BIND))
                    .map(Element::text_content)
                    .ok_or_else(|| Error::Protocol("resource binding gave no JID".into()))?;
                let jid = Jid::parse(jid.trim())?;
                if self.session_needed {
                    self.state = State::Session(jid);
                    let iq = Element::new("iq", NS_CLIENT)
                        .attr("type", "set")
                        .attr("id", "session")
                        .child(Element::new("session", NS_SESSION));
                    return Ok(vec![Step::Send(iq.to_stanza_xml())]);
                }
                Ok(vec![Step::Ready(jid)])
            }
            State::Session(jid) if el.name == "iq" && el.get_attr("id") == Some("session") => {
                if el.get_attr("type") != Some("result") {
                    return Err(Error::Protocol("session establishment failed".into()));
                }
                Ok(vec![Step::Ready(jid)])
            }
            state => {
                // Anything else during negotiation (a stray stanza) is ignored.
                self.state = state;
                Ok(vec![])
            }
        }
    }

    fn on_header(&mut self, header: &Element) -> Result<Vec<Step>, Error> {
        match &self.kind {
            Kind::Component { secret, .. } => {
                let id = header
                    .get_attr("id")
                    .ok_or_else(|| Error::Protocol("the stream header has no id".into()))?;
                self.state = State::Handshake;
                let digest = handshake_digest(id, secret);
                Ok(vec![Step::Send(format!("<handshake>{digest}</handshake>"))])
            }
            Kind::Client { .. } => {
                self.state = State::Features;
                Ok(vec![])
            }
        }
    }

    fn on_features(&mut self, features: &Element) -> Result<Vec<Step>, Error> {
        let Kind::Client {
            jid,
            password,
            tls_mode,
            nonce,
        } = &self.kind
        else {
            return Ok(vec![]);
        };
        if !self.tls {
            if features.find("starttls", NS_TLS).is_some() {
                self.state = State::StartTls;
                return Ok(vec![Step::Send(format!("<starttls xmlns='{NS_TLS}'/>"))]);
            }
            if *tls_mode == ClientTls::Required {
                return Err(Error::Tls(
                    "the server does not offer STARTTLS and TLS is required".into(),
                ));
            }
        }
        if !self.authenticated {
            let mechanisms: Vec<String> = features
                .find("mechanisms", NS_SASL)
                .map(|m| {
                    m.elements()
                        .filter(|e| e.name == "mechanism")
                        .map(|e| e.text_content().trim().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let plain_ok = self.tls || *tls_mode == ClientTls::Optional;
            let mechanism = Mechanism::choose(mechanisms.iter().map(String::as_str), plain_ok)
                .ok_or_else(|| {
                    Error::Auth(format!(
                        "no usable SASL mechanism among {mechanisms:?} (PLAIN needs TLS)"
                    ))
                })?;
            let user = jid.bare().node().unwrap_or_default();
            let (payload, scram) = match mechanism {
                Mechanism::Plain => (crate::sasl::plain(user, password), None),
                m => {
                    let scram = Scram::new(m, user, password, nonce);
                    (scram.client_first(), Some(Box::new(scram)))
                }
            };
            self.state = State::Auth {
                scram,
                verified: false,
            };
            let auth = Element::new("auth", NS_SASL)
                .attr("mechanism", mechanism.name())
                .text(b64(&payload));
            return Ok(vec![Step::Send(auth.to_stanza_xml())]);
        }
        if features.find("bind", NS_BIND).is_none() {
            return Err(Error::Protocol(
                "the server offers no resource binding".into(),
            ));
        }
        // RFC 3921 session establishment, still required by old servers (not when
        // marked optional, RFC 6121 drops it).
        self.session_needed = features
            .find("session", NS_SESSION)
            .is_some_and(|s| s.find("optional", NS_SESSION).is_none());
        let mut bind = Element::new("bind", NS_BIND);
        if let Some(resource) = jid.resource() {
            bind = bind.child(Element::new("resource", NS_BIND).text(resource));
        }
        let iq = Element::new("iq", NS_CLIENT)
            .attr("type", "set")
            .attr("id", "bind")
            .child(bind);
        self.state = State::Bind;
        Ok(vec![Step::Send(iq.to_stanza_xml())])
    }

    fn on_auth(
        &mut self,
        el: &Element,
        mut scram: Option<Box<Scram>>,
        mut verified: bool,
    ) -> Result<Vec<Step>, Error> {
        if el.ns != NS_SASL {
            self.state = State::Auth { scram, verified };
            return Ok(vec![]);
        }
        let data = B64
            .decode(el.text_content().trim().trim_end_matches('\u{0}'))
            .ok()
            .unwrap_or_default();
        match el.name.as_str() {
            "challenge" => {
                let Some(s) = scram.as_mut() else {
                    return Err(Error::Auth("unexpected SASL challenge".into()));
                };
                let reply = if !verified && s.has_server_signature() {
                    s.verify_server_final(&data)?;
                    verified = true;
                    Vec::new()
                } else {
                    s.client_final(&data)?
                };
                self.state = State::Auth { scram, verified };
                let response = Element::new("response", NS_SASL).text(b64(&reply));
                Ok(vec![Step::Send(response.to_stanza_xml())])
            }
            "success" => {
                if let Some(s) = &scram
                    && !verified
                {
                    s.verify_server_final(&data)?;
                }
                self.authenticated = true;
                Ok(vec![Step::Restart])
            }
            "failure" => {
                let condition = el
                    .elements()
                    .find(|e| e.name != "text")
                    .map(|e| e.name.clone())
                    .unwrap_or_else(|| "failure".into());
                Err(Error::Auth(format!(
                    "the server refused the login ({condition})"
                )))
            }
            _ => {
                self.state = State::Auth { scram, verified };
                Ok(vec![])
            }
        }
    }
}

fn b64(data: &[u8]) -> String {
    if data.is_empty() {
        // RFC 6120 6.4.2: an empty response is "=".
        "=".into()
    } else {
        B64.encode(data)
    }
}

/// The condition and text of a `<stream:error>`.
pub fn stream_error_text(el: &Element) -> String {
    let condition = el
        .elements()
        .find(|e| e.ns == NS_STREAMS_ERR && e.name != "text")
        .map(|e| e.name.clone())
        .unwrap_or_else(|| "undefined-condition".into());
    match el.find("text", NS_STREAMS_ERR) {
        Some(t) => format!("{condition}: {}", t.text_content()),
        None => condition,
    }
}

/// The defined condition and text of a stanza's `<error>`.
pub fn error_condition(stanza: &Element) -> (String, Option<String>) {
    let Some(err) = stanza.elements().find(|e| e.name == "error") else {
        return ("undefined-condition".into(), None);
    };
    let condition = err
        .elements()
        .find(|e| e.ns == NS_STANZAS && e.name != "text")
        .map(|e| e.name.clone())
        .unwrap_or_else(|| "undefined-condition".into());
    let text = err
        .find("text", NS_STANZAS)
        .map(Element::text_content)
        .filter(|t| !t.is_empty());
    (condition, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{Framer, parse_element};

    fn el(xml: &str) -> Frame {
        let prefixes = vec![("stream".to_owned(), NS_STREAM.to_owned())];
        Frame::Element(parse_element(xml.as_bytes(), &prefixes).unwrap())
    }

    fn open(xml: &str) -> Frame {
        let mut f = Framer::new(1000);
        f.push(xml.as_bytes());
        f.next_frame().unwrap().unwrap()
    }

    #[test]
    fn component_handshake() {
        // XEP-0114's example: stream id 3BF96D32, secret "test".
        assert_eq!(
            handshake_digest("3BF96D32", "test"),
            "aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e"
        );
        let mut n =
            Negotiator::component(BareJid::parse("tidings.localhost").unwrap(), "test".into());
        let header = n.header();
        assert!(header.contains("xmlns='jabber:component:accept'"));
        assert!(header.contains("to='tidings.localhost'"));
        let steps = n
            .on_frame(open("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='3BF96D32' from='tidings.localhost'>"))
            .unwrap();
        assert_eq!(
            steps,
            vec![Step::Send(
                "<handshake>aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e</handshake>".into()
            )]
        );
        let steps = n.on_frame(el("<handshake/>")).unwrap();
        assert_eq!(
            steps,
            vec![Step::Ready(Jid::parse("tidings.localhost").unwrap())]
        );
    }

    #[test]
    fn component_refused() {
        let mut n = Negotiator::component(BareJid::parse("c.localhost").unwrap(), "x".into());
        n.header();
        n.on_frame(open(
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='1'>",
        ))
        .unwrap();
        let err = n
            .on_frame(el("<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"))
            .unwrap_err();
        assert!(err.to_string().contains("not-authorized"), "{err}");
    }

    const OPEN: &str = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client' id='s1' from='localhost' version='1.0'>";

    fn client(mode: ClientTls) -> Negotiator {
        Negotiator::client(
            Jid::parse("bot@localhost/tidings").unwrap(),
            "pencil".into(),
            mode,
            "fyko+d2lbbFgONRv9qkxdawL".into(),
        )
    }

    #[test]
    fn client_requires_tls_by_default() {
        let mut n = client(ClientTls::Required);
        n.header();
        n.on_frame(open(OPEN)).unwrap();
        let err = n
            .on_frame(el("<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>"))
            .unwrap_err();
        assert!(matches!(err, Error::Tls(_)), "{err}");
    }

    #[test]
    fn client_full_negotiation() {
        let mut n = client(ClientTls::Required);
        n.header();
        assert_eq!(n.on_frame(open(OPEN)).unwrap(), vec![]);
        let steps = n
            .on_frame(el("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"))
            .unwrap();
        assert_eq!(
            steps,
            vec![Step::Send(
                "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".into()
            )]
        );
        assert_eq!(
            n.on_frame(el("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"))
                .unwrap(),
            vec![Step::StartTls]
        );
        n.tls_established();
        n.header();
        n.on_frame(open(OPEN)).unwrap();
        let steps = n
            .on_frame(el("<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"))
            .unwrap();
        // The RFC 5802 example again, with user "bot".
        let Step::Send(auth) = &steps[0] else {
            panic!()
        };
        assert!(auth.contains("mechanism='SCRAM-SHA-1'"), "{auth}");
        assert!(auth.contains(&B64.encode("n,,n=bot,r=fyko+d2lbbFgONRv9qkxdawL")));
        let challenge =
            B64.encode("r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
        let steps = n
            .on_frame(el(&format!(
                "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{challenge}</challenge>"
            )))
            .unwrap();
        assert!(matches!(&steps[0], Step::Send(s) if s.starts_with("<response")));
        // A wrong server signature fails the login.
        let mut wrong = client(ClientTls::Required);
        wrong.state = State::Auth {
            scram: Some(Box::new(Scram::new(
                Mechanism::ScramSha1,
                "bot",
                "pencil",
                "n",
            ))),
            verified: false,
        };
        assert!(
            wrong
                .on_frame(el(&format!(
                    "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</success>",
                    B64.encode("v=AAAA")
                )))
                .is_err()
        );
        let Kind::Client { .. } = &n.kind else {
            panic!()
        };
        // Bind, with the session step the features require.
        n.authenticated = true;
        n.header();
        n.on_frame(open(OPEN)).unwrap();
        let steps = n
            .on_frame(el("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></stream:features>"))
            .unwrap();
        let Step::Send(bind) = &steps[0] else {
            panic!()
        };
        assert!(bind.contains("<resource>tidings</resource>"), "{bind}");
        let steps = n
            .on_frame(el("<iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>bot@localhost/tidings</jid></bind></iq>"))
            .unwrap();
        assert!(matches!(&steps[0], Step::Send(s) if s.contains("xmpp-session")));
        let steps = n.on_frame(el("<iq type='result' id='session'/>")).unwrap();
        assert_eq!(
            steps,
            vec![Step::Ready(Jid::parse("bot@localhost/tidings").unwrap())]
        );
    }

    #[test]
    fn client_login_refused() {
        let mut n = client(ClientTls::Optional);
        n.header();
        n.on_frame(open(OPEN)).unwrap();
        n.on_frame(el("<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>"))
            .unwrap();
        let err = n
            .on_frame(el(
                "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>",
            ))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Auth(t) if t.contains("not-authorized")),
            "{err}"
        );
    }
}
