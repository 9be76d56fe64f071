//! What the server never confirmed goes out again after a reconnect, and what it confirmed
//! does not. Prosody cannot be made to drop a connection between taking a stanza and
//! answering the ping after it, so the server here is a scripted XEP-0114 server on
//! 127.0.0.1 (it speaks the real handshake; its frames are cut by this crate's framer).

use std::time::Duration;

use tidings_xmpp::xml::{Element, Frame, Framer};
use tidings_xmpp::{BareJid, Inbound, Jid, Mode, Outbound, XmppConfig, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

const DOMAIN: &str = "tidings.localhost";
const SECRET: &str = "s3cret";

struct FakeConn {
    stream: TcpStream,
    framer: Framer,
}

impl FakeConn {
    /// Accepts a component and lets it in (checking its handshake).
    async fn accept(listener: &TcpListener) -> FakeConn {
        let (stream, _) = listener.accept().await.unwrap();
        let mut c = FakeConn {
            stream,
            framer: Framer::new(1 << 20),
        };
        let Frame::Open(header) = c.next().await else {
            panic!("no stream header")
        };
        assert_eq!(header.get_attr("to"), Some(DOMAIN));
        c.write("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='sid1' from='tidings.localhost'>").await;
        let Frame::Element(hs) = c.next().await else {
            panic!("no handshake")
        };
        assert_eq!(
            hs.text_content(),
            tidings_xmpp::negotiate::handshake_digest("sid1", SECRET)
        );
        c.write("<handshake/>").await;
        c
    }

    async fn next(&mut self) -> Frame {
        loop {
            if let Some(f) = self.framer.next_frame().unwrap() {
                return f;
            }
            let mut buf = [0u8; 4096];
            let n = self.stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the component closed the connection");
            self.framer.push(&buf[..n]);
        }
    }

    async fn write(&mut self, s: &str) {
        self.stream.write_all(s.as_bytes()).await.unwrap();
    }

    /// Reads until a message with `last` arrives; returns the message ids seen. Pings are
    /// answered only if `answer_pings`.
    async fn messages_until(&mut self, last: &str, answer_pings: bool) -> Vec<String> {
        let mut ids = Vec::new();
        loop {
            let Frame::Element(el) = self.next().await else {
                panic!("stream ended")
            };
            if el.name == "message" {
                let id = el.get_attr("id").unwrap_or_default().to_owned();
                ids.push(id.clone());
                if id == last {
                    return ids;
                }
            } else if el.name == "iq" && answer_pings {
                self.answer(&el).await;
            }
        }
    }

    async fn answer(&mut self, iq: &Element) {
        if iq.get_attr("type") == Some("get") {
            let reply = Element::new("iq", tidings_xmpp::xml::NS_CLIENT)
                .attr("type", "result")
                .attr("id", iq.get_attr("id").unwrap_or_default())
                .attr("from", iq.get_attr("to").unwrap_or_default())
                .attr("to", iq.get_attr("from").unwrap_or_default());
            self.write(&reply.to_stanza_xml()).await;
        }
    }

    /// Answers pings until none is outstanding for a while.
    async fn settle(&mut self) {
        while let Ok(Frame::Element(el)) = timeout(Duration::from_millis(500), self.next()).await {
            if el.name == "iq" {
                self.answer(&el).await;
            }
        }
    }
}

fn msg(id: &str) -> Outbound {
    Outbound {
        to: Jid::parse("alice@localhost").unwrap(),
        body: format!("body of {id}"),
        id: id.into(),
        request_receipt: false,
        markable: false,
        from_node: None,
    }
}

#[tokio::test]
async fn unconfirmed_stanzas_are_resent_confirmed_ones_are_not() {
    timeout(Duration::from_secs(60), scenario())
        .await
        .expect("the scenario finishes within a minute");
}

async fn scenario() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = XmppConfig::new(Mode::Component {
        host: "127.0.0.1".into(),
        port,
        domain: BareJid::parse(DOMAIN).unwrap(),
        secret: SECRET.into(),
    });
    cfg.reconnect_min = Duration::from_millis(50);
    cfg.reconnect_max = Duration::from_millis(200);
    let (stop, stop_rx) = watch::channel(false);
    let (handle, mut events) = start(cfg, vec![], stop_rx);

    // First connection: takes three messages, answers no ping, drops.
    let mut c1 = FakeConn::accept(&listener).await;
    for id in ["m-1", "m-2", "m-3"] {
        handle.send(msg(id)).await.unwrap();
    }
    assert_eq!(c1.messages_until("m-3", false).await, ["m-1", "m-2", "m-3"]);
    drop(c1);

    // Second: the three again, first and in order, then a new one; pings answered.
    let mut c2 = FakeConn::accept(&listener).await;
    handle.send(msg("m-4")).await.unwrap();
    assert_eq!(
        c2.messages_until("m-4", true).await,
        ["m-1", "m-2", "m-3", "m-4"]
    );
    c2.settle().await;
    drop(c2);

    // Third: all four were confirmed, only the new one comes.
    let mut c3 = FakeConn::accept(&listener).await;
    handle.send(msg("m-5")).await.unwrap();
    assert_eq!(c3.messages_until("m-5", true).await, ["m-5"]);

    // The events tell the story: up, down, up, down, up.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        match events.recv().await.unwrap() {
            Inbound::Connected => seen.push("up"),
            Inbound::Disconnected { .. } => seen.push("down"),
            _ => {}
        }
    }
    assert_eq!(seen, ["up", "down", "up", "down", "up"]);

    // Shutdown: the component says goodbye and closes the stream.
    stop.send(true).unwrap();
    loop {
        match c3.next().await {
            Frame::Close => break,
            Frame::Element(_) => {}
            Frame::Open(_) => panic!("a second header"),
        }
    }
    // Then the handle refuses (once the task has ended).
    let mut refused = false;
    for _ in 0..100 {
        if handle.send(msg("late")).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "send after shutdown is refused");
}

/// A receiver that does not keep up pauses reading from the server: nothing is lost, and
/// the unread answer to a ping does not count as a dead server.
#[tokio::test]
async fn a_slow_receiver_loses_nothing_and_keeps_the_connection() {
    timeout(Duration::from_secs(60), slow_receiver())
        .await
        .expect("the scenario finishes within a minute");
}

async fn slow_receiver() {
    const N: usize = 600;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = XmppConfig::new(Mode::Component {
        host: "127.0.0.1".into(),
        port,
        domain: BareJid::parse(DOMAIN).unwrap(),
        secret: SECRET.into(),
    });
    cfg.inbound_queue = 4;
    cfg.keepalive = Duration::from_millis(50);
    cfg.ping_timeout = Duration::from_millis(100);
    let (_stop, stop_rx) = watch::channel(false);
    let (_handle, mut events) = start(cfg, vec![], stop_rx);

    let server = tokio::spawn(async move {
        let mut c = FakeConn::accept(&listener).await;
        let mut burst = String::new();
        for i in 0..N {
            burst.push_str(&format!(
                "<presence from='alice@localhost/r{i}' to='tidings.localhost'/>"
            ));
        }
        c.write(&burst).await;
        // Then a well-behaved server: every ping answered.
        loop {
            let Frame::Element(el) = c.next().await else {
                return;
            };
            if el.name == "iq" {
                c.answer(&el).await;
            }
        }
    });

    // Not reading for a while: the queue fills, reading stops, pings go unread.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut next = 0;
    while next < N {
        match events.recv().await.unwrap() {
            Inbound::Connected => {}
            Inbound::Presence { resource, .. } => {
                assert_eq!(resource, Some(format!("r{next}")));
                next += 1;
            }
            other => panic!("unexpected {other:?} after {next} presences"),
        }
    }
    server.abort();
}
