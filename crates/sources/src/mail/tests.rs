//! parse_mail on well-formed, exotic and broken messages.

use super::{Attachment, parse_mail, reply_text};

fn crlf(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

#[test]
fn a_plain_message() {
    let raw = crlf(
        "From: Alice Example <alice@example.org>\n\
         To: bob@tidings.test\n\
         Subject: Backup   done\n\
         Message-ID: <1234@example.org>\n\
         \n\
         The nightly backup finished.\n\
         \n\
         \n\
         \n\
         42 files.   \n",
    );
    let mail = parse_mail(&raw);
    assert_eq!(mail.subject.as_deref(), Some("Backup done"));
    assert_eq!(
        mail.from.as_deref(),
        Some("Alice Example <alice@example.org>")
    );
    assert_eq!(mail.message_id.as_deref(), Some("1234@example.org"));
    assert_eq!(mail.text, "The nightly backup finished.\n\n42 files.");
    assert!(mail.attachments.is_empty());
    assert!(mail.warnings.is_empty(), "{:?}", mail.warnings);
}

#[test]
fn encoded_words_and_charsets_in_headers() {
    let raw = crlf(
        "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>\n\
         Subject: =?ISO-8859-1?Q?Caf=E9?= =?UTF-8?B?4piVIHJlYWR5?=\n\
         \n\
         body\n",
    );
    let mail = parse_mail(&raw);
    assert_eq!(mail.subject.as_deref(), Some("Café☕ ready"));
    assert_eq!(mail.from.as_deref(), Some("Jürgen Müller <jm@example.de>"));
    assert_eq!(mail.message_id, None);
    assert!(mail.warnings.is_empty(), "{:?}", mail.warnings);

    let bare = parse_mail(&crlf("From: plain@example.org\nSubject: x\n\nbody\n"));
    assert_eq!(bare.from.as_deref(), Some("plain@example.org"));
}

#[test]
fn body_charsets_and_transfer_encodings() {
    let qp = crlf(
        "Subject: qp\n\
         Content-Type: text/plain; charset=iso-8859-1\n\
         Content-Transfer-Encoding: quoted-printable\n\
         \n\
         caf=E9 cr=E8me, a soft=\n\
         ly broken line\n",
    );
    assert_eq!(parse_mail(&qp).text, "café crème, a softly broken line");

    let b64 = crlf(
        "Subject: b64\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: base64\n\
         \n\
         SGVsbG8sIHfDtnJsZCEg8J+Mjg==\n",
    );
    assert_eq!(parse_mail(&b64).text, "Hello, wörld! 🌎");

    // Shift_JIS needs encoding_rs (mail-parser's full_encoding).
    let mut sjis = crlf("Subject: sjis\nContent-Type: text/plain; charset=Shift_JIS\n\n");
    sjis.extend_from_slice(&[0x82, 0xb1, 0x82, 0xf1, 0x82, 0xc9, 0x82, 0xbf, 0x82, 0xcd]);
    sjis.extend_from_slice(b"\r\n");
    assert_eq!(parse_mail(&sjis).text, "こんにちは");

    let cp1252 = {
        let mut m = crlf("Subject: w\nContent-Type: text/plain; charset=windows-1252\n\n");
        m.extend_from_slice(b"\x93quoted\x94 \x80 5\r\n");
        m
    };
    assert_eq!(parse_mail(&cp1252).text, "\u{201c}quoted\u{201d} € 5");
}

#[test]
fn alternative_prefers_the_plain_part() {
    let raw = crlf(
        "Subject: alt\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/alternative; boundary=\"b1\"\n\
         \n\
         --b1\n\
         Content-Type: text/plain; charset=utf-8\n\
         \n\
         Plain version.\n\
         --b1\n\
         Content-Type: text/html; charset=utf-8\n\
         \n\
         <p>HTML <b>version</b>.</p>\n\
         --b1--\n",
    );
    let mail = parse_mail(&raw);
    assert_eq!(mail.text, "Plain version.");
    assert!(mail.attachments.is_empty(), "{:?}", mail.attachments);
    assert!(mail.warnings.is_empty(), "{:?}", mail.warnings);
}

#[test]
fn html_only_mail_becomes_text() {
    let raw = crlf(
        "Subject: html\n\
         Content-Type: text/html; charset=utf-8\n\
         Content-Transfer-Encoding: quoted-printable\n\
         \n\
         <html><head><style>.x{color:red}</style><title>ignored</title></head><body>\n\
         <h1>Build #42 failed</h1><p>Branch <code>main</code> &mdash; 3 tests =\n\
         failed.</p><script>track()</script>\n\
         <p>See&nbsp;the&nbsp;log &amp; fix it.</p></body></html>\n",
    );
    let mail = parse_mail(&raw);
    assert_eq!(
        mail.text,
        "Build #42 failed\n\nBranch main — 3 tests failed.\n\nSee the log & fix it."
    );
}

#[test]
fn nested_multiparts_with_attachments() {
    let raw = crlf(
        "From: \"Build Bot\" <bot@ci.example>\n\
         Subject: report\n\
         Content-Type: multipart/mixed; boundary=outer\n\
         \n\
         preamble\n\
         --outer\n\
         Content-Type: multipart/alternative; boundary=inner\n\
         \n\
         --inner\n\
         Content-Type: text/plain\n\
         \n\
         See the attached report.\n\
         --inner\n\
         Content-Type: text/html\n\
         \n\
         <p>See the <i>attached</i> report.</p>\n\
         --inner--\n\
         --outer\n\
         Content-Type: application/pdf; name=\"report.pdf\"\n\
         Content-Disposition: attachment; filename=\"report.pdf\"\n\
         Content-Transfer-Encoding: base64\n\
         \n\
         JVBERi0xLjQKJcfsj6IK\n\
         --outer\n\
         Content-Type: text/csv\n\
         Content-Disposition: attachment; filename*=UTF-8''donn%C3%A9es.csv\n\
         \n\
         a,b\n\
         1,2\n\
         --outer\n\
         Content-Type: message/rfc822\n\
         \n\
         Subject: the original\n\
         \n\
         forwarded text\n\
         --outer--\n\
         epilogue\n",
    );
    let mail = parse_mail(&raw);
    assert_eq!(mail.from.as_deref(), Some("Build Bot <bot@ci.example>"));
    assert_eq!(mail.text, "See the attached report.");
    assert_eq!(
        mail.attachments,
        [
            Attachment {
                name: "report.pdf".into(),
                size: 15,
                mime: "application/pdf".into()
            },
            Attachment {
                name: "données.csv".into(),
                size: 8,
                mime: "text/csv".into()
            },
            Attachment {
                name: "the original.eml".into(),
                size: mail.attachments[2].size,
                mime: "message/rfc822".into()
            },
        ]
    );
    assert!(mail.attachments[2].size > 0);
    assert!(mail.warnings.is_empty(), "{:?}", mail.warnings);
}

#[test]
fn an_unclosed_multipart_is_recovered_with_a_warning() {
    let raw = crlf(
        "Subject: truncated\n\
         Content-Type: multipart/mixed; boundary=zz\n\
         \n\
         --zz\n\
         Content-Type: text/plain\n\
         \n\
         Still readable.\n",
    );
    let mail = parse_mail(&raw);
    assert_eq!(mail.subject.as_deref(), Some("truncated"));
    assert_eq!(mail.text, "Still readable.");
    assert!(mail.attachments.is_empty(), "{:?}", mail.attachments);
    assert!(
        mail.warnings.iter().any(|w| w.contains("not closed")),
        "{:?}",
        mail.warnings
    );
}

#[test]
fn a_multipart_without_boundary_is_recovered_with_a_warning() {
    let raw = crlf(
        "Subject: no boundary\n\
         Content-Type: multipart/mixed\n\
         \n\
         Just some text.\n",
    );
    let mail = parse_mail(&raw);
    assert_eq!(mail.subject.as_deref(), Some("no boundary"));
    assert!(
        mail.warnings
            .iter()
            .any(|w| w.contains("without a boundary")),
        "{:?}",
        mail.warnings
    );
}

#[test]
fn unknown_charsets_and_bad_encodings_are_reported() {
    let raw = crlf(
        "Subject: =?x-unknown?Q?caf=E9?=\n\
         Content-Type: text/plain; charset=x-klingon\n\
         \n\
         qapla'\n",
    );
    let mail = parse_mail(&raw);
    assert_eq!(mail.text, "qapla'");
    assert!(mail.subject.is_some());
    assert!(
        mail.warnings.iter().any(|w| w.contains("x-klingon")),
        "{:?}",
        mail.warnings
    );

    let broken_b64 = crlf(
        "Subject: b\n\
         Content-Type: text/plain\n\
         Content-Transfer-Encoding: base64\n\
         \n\
         !!!! not base64 at all ####\n",
    );
    let mail = parse_mail(&broken_b64);
    assert_eq!(mail.subject.as_deref(), Some("b"));
    assert!(!mail.warnings.is_empty() || !mail.text.is_empty());
}

#[test]
fn odd_headers_are_recovered() {
    let raw = crlf(
        "From: not an address at all\n\
         Message-ID: bare-id@example.org\n\
         Subject: ok\n\
         \n\
         text\n",
    );
    let mail = parse_mail(&raw);
    // mail-parser reads both leniently; what it makes of them is kept.
    assert_eq!(mail.message_id.as_deref(), Some("bare-id@example.org"));
    assert_eq!(mail.from.as_deref(), Some("not an address at all"));
    assert_eq!(mail.text, "text");

    let raw = crlf(
        "From: <>
Message-ID: <>
Subject: 

text
",
    );
    let mail = parse_mail(&raw);
    assert_eq!(
        (mail.subject, mail.from, mail.message_id),
        (None, None, None)
    );
}

#[test]
fn no_header_separator_and_garbage() {
    let mail = parse_mail(b"just a line of text without any header");
    assert!(
        mail.warnings.iter().any(|w| w.contains("blank line")),
        "{:?}",
        mail.warnings
    );

    for raw in [
        &b""[..],
        b"\r\n",
        b"\r\n\r\n",
        b"\xff\xfe\x00\x01garbage\x00",
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
        b"Subject: =?utf-8?B?###?=\r\n\r\n",
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n",
    ] {
        let _ = parse_mail(raw);
    }
}

#[test]
fn a_huge_header_is_parsed() {
    let mut raw = String::from("Subject: big headers\r\n");
    for i in 0..5000 {
        raw.push_str(&format!("X-Trace-{i}: {}\r\n", "t".repeat(40)));
    }
    raw.push_str(&format!("X-Long: {}\r\n", "L".repeat(200_000)));
    raw.push_str("From: a@b.example\r\n\r\nbody after a huge header\r\n");
    let start = std::time::Instant::now();
    let mail = parse_mail(raw.as_bytes());
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(mail.subject.as_deref(), Some("big headers"));
    assert_eq!(mail.from.as_deref(), Some("a@b.example"));
    assert_eq!(mail.text, "body after a huge header");
}

#[test]
fn deeply_nested_multiparts_do_not_overflow() {
    let depth = 2000;
    let mut raw = String::from("Subject: deep\r\n");
    for i in 0..depth {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        ));
    }
    raw.push_str("Content-Type: text/plain\r\n\r\ncore\r\n");
    let mail = parse_mail(raw.as_bytes());
    assert_eq!(mail.subject.as_deref(), Some("deep"));
}

#[test]
fn mutated_messages_never_panic() {
    let base = crlf(
        "From: =?utf-8?q?A?= <a@b.example>\n\
         Subject: =?utf-8?B?w6k=?=\n\
         Content-Type: multipart/mixed; boundary=\"m\"\n\
         \n\
         --m\n\
         Content-Type: text/html; charset=utf-8\n\
         Content-Transfer-Encoding: quoted-printable\n\
         \n\
         <p>a=3Db &amp; <b>c</p>\n\
         --m\n\
         Content-Type: application/octet-stream; name=x.bin\n\
         Content-Transfer-Encoding: base64\n\
         \n\
         AAECAwQ=\n\
         --m--\n",
    );
    // A small deterministic generator: flip, drop and duplicate bytes.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let mut m = base.clone();
        for _ in 0..(next() % 8 + 1) {
            let len = m.len().max(1) as u64;
            let at = (next() % len) as usize;
            match next() % 4 {
                0 if at < m.len() => m[at] = (next() & 0xff) as u8,
                1 if at < m.len() => {
                    m.remove(at);
                }
                2 => {
                    let end = (at + (next() % 40) as usize).min(m.len());
                    let chunk = m[at.min(end)..end].to_vec();
                    m.splice(at.min(m.len())..at.min(m.len()), chunk);
                }
                _ => m.truncate(at),
            }
        }
        let _ = parse_mail(&m);
    }
}

#[test]
fn replies_go_to_reply_to_else_from() {
    let raw = crlf(
        "From: Alice <alice@example.org>\nReply-To: Team <team@example.org>\nSubject: x\n\nhi\n",
    );
    assert_eq!(
        parse_mail(&raw).reply_address.as_deref(),
        Some("team@example.org")
    );
    let raw = crlf("From: Alice <alice@example.org>\nSubject: x\n\nhi\n");
    assert_eq!(
        parse_mail(&raw).reply_address.as_deref(),
        Some("alice@example.org")
    );
    let raw = crlf("From: not an address\nSubject: x\n\nhi\n");
    assert_eq!(parse_mail(&raw).reply_address, None);
}

#[test]
fn reply_text_drops_quotes_and_signatures() {
    let top = "Thanks, restarting it now.\n\nOn Tue, 3 Mar 2026 at 10:00, tidings <t@x> wrote:\n> Disk full\n> on sda1\n";
    assert_eq!(reply_text(top), "Thanks, restarting it now.");
    let inline = "> Disk full?\nYes, on sda1.\n> Fix it?\nDone.\n-- \nBob\n";
    assert_eq!(reply_text(inline), "Yes, on sda1.\nDone.");
    let outlook = "ack\n-----Original Message-----\nFrom: tidings\n";
    assert_eq!(reply_text(outlook), "ack");
    let german = "Erledigt.\n\nAlice schrieb wrote:\n> alt\n";
    assert_eq!(reply_text(german), "Erledigt.");
    assert_eq!(reply_text("\n\n  \n"), "");
}
