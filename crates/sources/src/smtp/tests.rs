//! The session state machine, byte by byte, without sockets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::{AcceptedMail, Event, MAX_DATA_LINE_BYTES, Recipient, Refusal, Session, SmtpConfig};

fn config() -> SmtpConfig {
    SmtpConfig {
        hostname: "mx.tidings.test".to_owned(),
        mail_domain: "tidings.test".to_owned(),
        max_message_bytes: 1000,
        max_recipients: 3,
        max_header_bytes: 200,
        max_commands_per_minute: 1000,
        ..SmtpConfig::default()
    }
}

fn peer() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], 40000))
}

/// Drives a session the way the listener does, with an in-memory directory.
struct Harness {
    s: Session,
    now: i64,
    deliver_ok: bool,
    delivered: Vec<AcceptedMail>,
    checked: Vec<Recipient>,
    greeting: String,
}

impl Harness {
    fn new(cfg: SmtpConfig) -> Harness {
        let mut s = Session::new(Arc::new(cfg), peer());
        let greeting = String::from_utf8(s.take_output()).expect("utf-8 reply");
        Harness {
            s,
            now: 1_700_000_000_000,
            deliver_ok: true,
            delivered: Vec::new(),
            checked: Vec::new(),
            greeting,
        }
    }

    fn ready() -> Harness {
        let mut h = Harness::new(config());
        h.send(b"EHLO client.example\r\n");
        h
    }

    /// Feeds bytes and runs until the session needs input (or closes, or wants TLS);
    /// returns what it answered and the event it stopped on.
    fn send_ev(&mut self, bytes: &[u8]) -> (String, Event) {
        self.s.receive(bytes);
        loop {
            match self.s.next_event(self.now) {
                Event::CheckRecipient(rcpt) => {
                    self.checked.push(rcpt.clone());
                    let result = match rcpt.local.as_str() {
                        "alice" | "bob" => Ok(()),
                        "busy" => Err(Refusal::Temporary("Directory busy\r\n250 fake".into())),
                        _ => Err(Refusal::UnknownUser),
                    };
                    self.s.recipient_checked(result);
                }
                Event::Deliver(mail) => {
                    let ok = self.deliver_ok;
                    if ok {
                        self.delivered.push(mail);
                    }
                    self.s
                        .delivered(if ok { Ok(()) } else { Err("disk full".into()) });
                }
                event => {
                    let out = String::from_utf8(self.s.take_output()).expect("utf-8 reply");
                    return (out, event);
                }
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> String {
        self.send_ev(bytes).0
    }
}

/// "250 2.1.0" style heads of each reply line (the code alone for lines without one).
fn heads(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            let mut parts = l.splitn(3, [' ', '-']);
            let code = parts.next().unwrap_or_default();
            match parts.next() {
                Some(enh) if enh.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                    format!("{code} {enh}")
                }
                _ => code.to_owned(),
            }
        })
        .collect()
}

#[test]
fn greeting_and_ehlo_advertise_the_extensions() {
    let mut h = Harness::new(config());
    assert_eq!(h.greeting, "220 mx.tidings.test ESMTP tidings\r\n");
    let out = h.send(b"EHLO client.example\r\n");
    assert_eq!(
        out,
        "250-mx.tidings.test Hello client.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
         250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 HELP\r\n"
    );
    assert_eq!(h.send(b"HELO other\r\n"), "250 mx.tidings.test\r\n");

    let tls = SmtpConfig {
        tls: Some((PathBuf::from("cert.pem"), PathBuf::from("key.pem"))),
        ..config()
    };
    let mut h = Harness::new(tls);
    assert!(h.send(b"EHLO c\r\n").contains("250-STARTTLS\r\n"));
}

#[test]
fn a_transaction_is_delivered_and_acknowledged_only_after_the_sink() {
    let mut h = Harness::ready();
    let out = h.send(b"MAIL FROM:<sender@example.org> BODY=8BITMIME SIZE=300\r\n");
    assert_eq!(heads(&out), ["250 2.1.0"]);
    let out = h.send(b"RCPT TO:<alice@tidings.test>\r\nRCPT TO:<Bob+GitHub@TIDINGS.test>\r\n");
    assert_eq!(heads(&out), ["250 2.1.5", "250 2.1.5"]);
    assert_eq!(
        h.checked,
        [
            Recipient {
                local: "alice".into(),
                label: None
            },
            Recipient {
                local: "bob".into(),
                label: Some("github".into())
            }
        ]
    );
    assert_eq!(
        h.send(b"DATA\r\n"),
        "354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    assert!(h.s.in_transaction());

    // Hand-driven here, to see that nothing is said before the sink answers.
    h.s.receive(b"Subject: hi\r\n\r\n..leading dot\r\nnot a terminator: .\r\n...\r\n.\r\nNOOP\r\n");
    let Event::Deliver(mail) = h.s.next_event(h.now) else {
        panic!("expected a delivery");
    };
    assert!(!h.s.has_output(), "no reply before the message is durable");
    assert_eq!(
        mail.raw,
        b"Subject: hi\r\n\r\n.leading dot\r\nnot a terminator: .\r\n..\r\n"
    );
    assert_eq!(mail.mail_from, "sender@example.org");
    assert_eq!(mail.recipients.len(), 2);
    assert_eq!(mail.helo, "client.example");
    assert_eq!(mail.peer, peer());
    assert_eq!(mail.received_at, h.now);
    h.s.delivered(Ok(()));
    assert_eq!(h.s.next_event(h.now), Event::NeedInput);
    let out = String::from_utf8(h.s.take_output()).expect("utf-8");
    // The pipelined NOOP after the message is answered after it, in order.
    assert_eq!(heads(&out), ["250 2.0.0", "250 2.0.0"]);
    assert!(out.starts_with("250 2.0.0 Message accepted\r\n"));
    assert!(!h.s.in_transaction());
}

#[test]
fn a_pipelined_batch_is_answered_in_order_with_one_flush() {
    let mut h = Harness::new(config());
    let (out, event) = h.send_ev(
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@tidings.test>\r\nRCPT TO:<nobody@tidings.test>\r\n\
          RCPT TO:<alice@elsewhere.example>\r\nRCPT TO:<busy@tidings.test>\r\nDATA\r\n",
    );
    assert_eq!(event, Event::NeedInput);
    let got = heads(&out);
    assert_eq!(
        &got[7..],
        [
            "250 2.1.0",
            "250 2.1.5",
            "550 5.1.1",
            "550 5.7.1",
            "451 4.3.0",
            "354"
        ]
    );
    // The sink's text is shown, but cannot forge a second reply line.
    assert!(out.contains("451 4.3.0 Directory busy  250 fake\r\n"));
    let (out, _) = h.send_ev(b"body\r\n.\r\n");
    assert_eq!(heads(&out), ["250 2.0.0"]);
    assert_eq!(h.delivered[0].mail_from, "");
    assert_eq!(h.delivered[0].recipients.len(), 1);
}

#[test]
fn input_split_at_every_byte_gives_the_same_session() {
    let script: &[u8] = b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<alice@tidings.test>\r\n\
        DATA\r\nSubject: s\r\n\r\nline\r\n..dot\r\n.\r\nQUIT\r\n";
    let mut whole = Harness::new(config());
    let (all_at_once, last) = whole.send_ev(script);
    assert_eq!(last, Event::Close);

    let mut split = Harness::new(config());
    let mut out = String::new();
    let mut last = Event::NeedInput;
    for b in script {
        let (o, e) = split.send_ev(std::slice::from_ref(b));
        out.push_str(&o);
        last = e;
    }
    assert_eq!(last, Event::Close);
    assert_eq!(out, all_at_once);
    assert_eq!(split.delivered, whole.delivered);
    assert_eq!(
        split.delivered[0].raw,
        b"Subject: s\r\n\r\nline\r\n.dot\r\n"
    );
}

#[test]
fn commands_out_of_sequence_get_503() {
    let mut h = Harness::new(config());
    assert_eq!(heads(&h.send(b"MAIL FROM:<a@b.c>\r\n")), ["503 5.5.1"]);
    h.send(b"EHLO c\r\n");
    assert_eq!(
        heads(&h.send(b"RCPT TO:<alice@tidings.test>\r\n")),
        ["503 5.5.1"]
    );
    assert_eq!(heads(&h.send(b"DATA\r\n")), ["503 5.5.1"]);
    h.send(b"MAIL FROM:<a@b.c>\r\n");
    assert_eq!(heads(&h.send(b"MAIL FROM:<a@b.c>\r\n")), ["503 5.5.1"]);
    assert_eq!(heads(&h.send(b"DATA\r\n")), ["554 5.5.1"]);
}

#[test]
fn other_commands_and_syntax_errors() {
    let mut h = Harness::ready();
    assert_eq!(heads(&h.send(b"NOOP\r\n")), ["250 2.0.0"]);
    assert_eq!(heads(&h.send(b"VRFY alice\r\n")), ["252 2.5.0"]);
    assert_eq!(heads(&h.send(b"HELP\r\n")), ["214 2.0.0"]);
    assert_eq!(heads(&h.send(b"FROB x\r\n")), ["500 5.5.2"]);
    assert_eq!(heads(&h.send(b"EXPN list\r\n")), ["502 5.5.1"]);
    assert_eq!(heads(&h.send(b"EHLO\r\n")), ["501 5.5.4"]);
    assert_eq!(heads(&h.send(b"MAIL FROM:bad\r\n")), ["501 5.5.4"]);
    assert_eq!(
        heads(&h.send(b"MAIL FROM:<a@b.c> FOO=bar\r\n")),
        ["555 5.5.4"]
    );
    assert_eq!(heads(&h.send(b"STARTTLS\r\n")), ["502 5.5.1"]);
    h.send(b"MAIL FROM:<a@b.c>\r\n");
    assert_eq!(
        heads(&h.send(b"RCPT TO:<+label@tidings.test>\r\n")),
        ["501 5.1.3"]
    );
    assert_eq!(heads(&h.send(b"RCPT TO:<postmaster>\r\n")), ["550 5.7.1"]);
    assert_eq!(
        heads(&h.send(b"RCPT TO:<alice@tidings.test.>\r\n")),
        ["250 2.1.5"]
    );
    assert_eq!(
        heads(&h.send(b"RCPT TO:<alice+@tidings.test>\r\n")),
        ["250 2.1.5"]
    );
    // The same recipient twice is one recipient, looked up once.
    assert_eq!(h.checked.len(), 1);
    assert_eq!(h.checked[0].label, None);
}

#[test]
fn rset_ends_the_transaction() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<alice@tidings.test>\r\n");
    assert!(h.s.in_transaction());
    assert_eq!(heads(&h.send(b"RSET\r\n")), ["250 2.0.0"]);
    assert!(!h.s.in_transaction());
    assert_eq!(heads(&h.send(b"DATA\r\n")), ["503 5.5.1"]);
    // And a new one starts cleanly.
    let out = h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<bob@tidings.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(heads(&out), ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]);
    assert_eq!(h.delivered.len(), 1);
    assert_eq!(h.delivered[0].recipients[0].local, "bob");
}

#[test]
fn too_many_recipients_get_452() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.c>\r\n");
    for user in ["alice", "bob", "alice+a"] {
        let out = h.send(format!("RCPT TO:<{user}@tidings.test>\r\n").as_bytes());
        assert_eq!(heads(&out), ["250 2.1.5"]);
    }
    assert_eq!(
        heads(&h.send(b"RCPT TO:<bob+b@tidings.test>\r\n")),
        ["452 4.5.3"]
    );
}

#[test]
fn size_is_refused_up_front_and_at_the_end() {
    let mut h = Harness::ready();
    let out = h.send(b"MAIL FROM:<a@b.c> SIZE=1001\r\n");
    assert_eq!(heads(&out), ["552 5.3.4"]);
    assert!(!h.s.in_transaction());

    h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<alice@tidings.test>\r\nDATA\r\n");
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..50 {
        body.extend_from_slice(&[b'x'; 78]);
        body.extend_from_slice(b"\r\n");
    }
    // Sent in pieces: the reader keeps consuming past the limit without an answer...
    for chunk in body.chunks(100) {
        let (out, ev) = h.send_ev(chunk);
        assert_eq!((out.as_str(), ev), ("", Event::NeedInput));
    }
    // ...and refuses at the real end.
    assert_eq!(heads(&h.send(b".\r\n")), ["552 5.3.4"]);
    assert!(h.delivered.is_empty());
    // Exactly at the limit is fine.
    h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<alice@tidings.test>\r\nDATA\r\n");
    let mut exact = b"S: x\r\n\r\n".to_vec();
    exact.resize(998, b'y');
    exact.extend_from_slice(b"\r\n");
    exact.extend_from_slice(b".\r\n");
    assert_eq!(heads(&h.send(&exact)), ["250 2.0.0"]);
    assert_eq!(h.delivered[0].raw.len(), 1000);
}

#[test]
fn a_huge_header_is_refused() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<alice@tidings.test>\r\nDATA\r\n");
    let mut msg = Vec::new();
    for i in 0..10 {
        msg.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "h".repeat(20)).as_bytes());
    }
    msg.extend_from_slice(b"\r\nshort body\r\n.\r\n");
    let out = h.send(&msg);
    assert_eq!(heads(&out), ["552 5.3.4"]);
    assert!(out.contains("Header"));
    assert!(h.delivered.is_empty());
}

#[test]
fn an_overlong_text_line_is_refused() {
    let cfg = SmtpConfig {
        max_message_bytes: 1 << 20,
        ..config()
    };
    let mut h = Harness::new(cfg);
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@tidings.test>\r\nDATA\r\n");
    let mut msg = b"S: x\r\n\r\n".to_vec();
    msg.resize(msg.len() + MAX_DATA_LINE_BYTES + 1, b'z');
    msg.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(heads(&h.send(&msg)), ["554 5.6.0"]);
    // A line of exactly the limit is accepted.
    h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<alice@tidings.test>\r\nDATA\r\n");
    let mut msg = b"S: x\r\n\r\n".to_vec();
    msg.resize(msg.len() + MAX_DATA_LINE_BYTES, b'z');
    msg.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(heads(&h.send(&msg)), ["250 2.0.0"]);
}

#[test]
fn bare_lf_in_commands_is_refused() {
    let mut h = Harness::ready();
    let out = h.send(b"MAIL FROM:<a@b.c>\nRCPT TO:<alice@tidings.test>\r\n");
    assert_eq!(heads(&out), ["500 5.5.2", "503 5.5.1"]);
    assert!(out.contains("Bare LF"));
    let out = h.send(b"NOOP\rRSET\r\n");
    assert_eq!(heads(&out), ["500 5.5.2"]);
    assert!(out.contains("Bare CR"));
}

#[test]
fn smuggling_with_bare_newlines_is_refused_and_nothing_is_smuggled() {
    // The 2023 SMTP smuggling payloads: a fake end of data with bare LF or CR, followed by
    // a second message meant to be taken as commands.
    let fakes: [&[u8]; 6] = [
        b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n",
    ];
    for fake in fakes {
        let mut h = Harness::ready();
        h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<alice@tidings.test>\r\nDATA\r\n");
        let mut msg = b"Subject: legit\r\n\r\nhello".to_vec();
        msg.extend_from_slice(fake);
        msg.extend_from_slice(
            b"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<bob@tidings.test>\r\nDATA\r\n\
              Subject: smuggled\r\n\r\nevil\r\n.\r\n",
        );
        let out = h.send(&msg);
        assert_eq!(heads(&out), ["550 5.6.11"], "payload {fake:?}: {out}");
        assert!(h.delivered.is_empty(), "payload {fake:?}");
        assert_eq!(h.checked.len(), 1, "no smuggled RCPT was looked at");
        // The session is in command mode again and works.
        assert_eq!(heads(&h.send(b"NOOP\r\n")), ["250 2.0.0"]);
    }
}

#[test]
fn a_failed_delivery_gets_451_and_ends_the_transaction() {
    let mut h = Harness::ready();
    h.deliver_ok = false;
    let out = h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<alice@tidings.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(heads(&out), ["250 2.1.0", "250 2.1.5", "354", "451 4.3.0"]);
    assert!(!out.contains("disk full"), "internal errors are not shown");
    assert_eq!(heads(&h.send(b"DATA\r\n")), ["503 5.5.1"]);
}

#[test]
fn an_unanswered_event_counts_as_a_temporary_failure() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.c>\r\n");
    h.s.receive(b"RCPT TO:<alice@tidings.test>\r\n");
    assert!(matches!(h.s.next_event(h.now), Event::CheckRecipient(_)));
    assert_eq!(h.s.next_event(h.now), Event::NeedInput);
    assert_eq!(
        heads(&String::from_utf8_lossy(&h.s.take_output())),
        ["451 4.3.0"]
    );
}

#[test]
fn long_command_lines_are_refused_without_buffering_them() {
    let mut h = Harness::ready();
    let (out, ev) = h.send_ev(&[b'A'; 5000]);
    assert_eq!(ev, Event::NeedInput);
    assert_eq!(heads(&out), ["500 5.5.2"]);
    // The rest of that line is skipped, up to its end.
    assert_eq!(h.send(&[b'A'; 5000]), "");
    assert_eq!(heads(&h.send(b"AAA\r\nNOOP\r\n")), ["250 2.0.0"]);
    // A complete line over the limit in one read is refused too.
    let mut line = b"NOOP ".to_vec();
    line.resize(4200, b'x');
    line.extend_from_slice(b"\r\nNOOP\r\n");
    assert_eq!(heads(&h.send(&line)), ["500 5.5.2", "250 2.0.0"]);
}

#[test]
fn the_command_rate_is_limited() {
    let cfg = SmtpConfig {
        max_commands_per_minute: 5,
        ..config()
    };
    let mut h = Harness::new(cfg);
    let (out, ev) = h.send_ev(&b"NOOP\r\n".repeat(5));
    assert_eq!((heads(&out).len(), ev), (5, Event::NeedInput));
    // A new minute, a new allowance.
    h.now += 60_000;
    let (out, ev) = h.send_ev(&b"NOOP\r\n".repeat(6));
    assert_eq!(ev, Event::Close);
    assert_eq!(heads(&out).last().map(String::as_str), Some("421 4.7.0"));
    assert!(h.s.is_closed());
    assert_eq!(h.s.next_event(h.now), Event::Close);
}

#[test]
fn many_bad_commands_close_the_connection() {
    let mut h = Harness::ready();
    let (out, ev) = h.send_ev(&b"BOGUS\r\n".repeat(25));
    assert_eq!(ev, Event::Close);
    let heads = heads(&out);
    assert_eq!(heads.len(), 21);
    assert_eq!(heads[20], "421 4.7.0");
}

#[test]
fn http_requests_are_cut_off() {
    let mut h = Harness::new(config());
    let (out, ev) = h.send_ev(b"POST /api HTTP/1.1\r\nHost: x\r\n\r\nMAIL FROM:<a@b.c>\r\n");
    assert_eq!(ev, Event::Close);
    assert_eq!(heads(&out), ["421 4.7.0"]);
}

#[test]
fn quit_idle_and_shutdown_close() {
    let mut h = Harness::ready();
    let (out, ev) = h.send_ev(b"QUIT\r\nNOOP\r\n");
    assert_eq!(
        (heads(&out), ev),
        (vec!["221 2.0.0".to_owned()], Event::Close)
    );

    let mut h = Harness::ready();
    h.s.idle_timeout();
    assert_eq!(h.s.next_event(h.now), Event::Close);
    assert_eq!(
        heads(&String::from_utf8_lossy(&h.s.take_output())),
        ["421 4.4.2"]
    );

    let mut h = Harness::ready();
    h.s.shutdown();
    assert_eq!(h.s.next_event(h.now), Event::Close);
    assert_eq!(
        heads(&String::from_utf8_lossy(&h.s.take_output())),
        ["421 4.3.2"]
    );

    let busy = String::from_utf8(Session::busy_reply("mx")).expect("utf-8");
    assert_eq!(heads(&busy), ["421 4.3.2"]);
}

#[test]
fn starttls_resets_the_session_and_drops_pipelined_input() {
    let cfg = SmtpConfig {
        tls: Some((PathBuf::from("cert.pem"), PathBuf::from("key.pem"))),
        ..config()
    };
    let mut h = Harness::new(cfg);
    assert_eq!(heads(&h.send(b"STARTTLS\r\n")), ["503 5.5.1"]);
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n");
    // A command injected after STARTTLS, in the same packet (CVE-2011-0411).
    let (out, ev) = h.send_ev(b"STARTTLS\r\nRCPT TO:<alice@tidings.test>\r\n");
    assert_eq!(ev, Event::StartTls);
    assert_eq!(heads(&out), ["220 2.0.0"]);
    h.s.tls_started();
    assert!(h.s.tls_active());
    assert!(!h.s.in_transaction());
    let (out, ev) = h.send_ev(b"");
    assert_eq!((out.as_str(), ev), ("", Event::NeedInput));
    assert!(h.checked.is_empty(), "the injected RCPT was not run");
    // A fresh EHLO is needed, and no longer offers STARTTLS.
    assert_eq!(heads(&h.send(b"MAIL FROM:<a@b.c>\r\n")), ["503 5.5.1"]);
    let out = h.send(b"EHLO c\r\n");
    assert!(!out.contains("STARTTLS"));
    assert_eq!(heads(&h.send(b"STARTTLS\r\n")), ["503 5.5.1"]);
}

#[test]
fn an_empty_message_is_still_a_message() {
    let mut h = Harness::ready();
    let out = h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<alice@tidings.test>\r\nDATA\r\n.\r\n");
    assert_eq!(heads(&out).last().map(String::as_str), Some("250 2.0.0"));
    assert_eq!(h.delivered[0].raw, b"");
}
