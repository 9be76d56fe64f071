//! The wire format byte by byte, and the session against scripted servers over in-memory
//! pipes for what a real server rarely does (no LITERAL+, no UIDNEXT, sizes that lie,
//! silence). The real thing, Dovecot, is in tests/imap.rs.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::task::JoinHandle;

use super::client::over_stream;
use super::proto::{
    Code, Command, FetchData, FrameError, RespText, Response, Status, Untagged, base64,
    encode_mailbox, frame_len, parse_response, uid_set,
};
use super::{ImapAccount, ImapConfig, ImapCursor, ImapError, TlsMode};

const BIG: usize = 1 << 20;

fn parse(s: &[u8]) -> Response {
    match parse_response(s) {
        Ok(r) => r,
        Err(e) => panic!("{e:?} for {:?}", String::from_utf8_lossy(s)),
    }
}

#[test]
fn frames_lines_and_literals() {
    assert_eq!(frame_len(b"* OK hi", BIG, BIG), Ok(None));
    assert_eq!(frame_len(b"* OK hi\r\n* 1 EX", BIG, BIG), Ok(Some(9)));
    let fetch = b"* 1 FETCH (BODY[] {5}\r\nab\r\nc UID 3)\r\nt1 OK\r\n";
    assert_eq!(frame_len(&fetch[..20], BIG, BIG), Ok(None));
    assert_eq!(frame_len(&fetch[..27], BIG, BIG), Ok(None));
    assert_eq!(frame_len(fetch, BIG, BIG), Ok(Some(37)));
    // Two literals in one response, the non-synchronizing form too.
    let two = b"* 1 FETCH (A {2}\r\nxy B {1+}\r\nz)\r\n";
    assert_eq!(frame_len(two, BIG, BIG), Ok(Some(two.len())));
    // A brace that is not a literal announcement.
    assert_eq!(frame_len(b"* OK {x}\r\n", BIG, BIG), Ok(Some(10)));
}

#[test]
fn frames_refuse_what_is_too_large_before_it_arrives() {
    assert_eq!(
        frame_len(b"* 1 FETCH (BODY[] {1000}\r\n", BIG, 100),
        Err(FrameError::TooLarge)
    );
    assert_eq!(
        frame_len(b"* 1 FETCH (BODY[] {99999999999999}\r\n", BIG, BIG),
        Err(FrameError::TooLarge)
    );
    assert_eq!(frame_len(&[b'a'; 50], 40, BIG), Err(FrameError::TooLarge));
    assert_eq!(frame_len(&[b'a'; 30], 40, BIG), Ok(None));
}

#[test]
fn parses_status_responses_and_codes() {
    let greeting = parse(b"* OK [CAPABILITY IMAP4rev1 IDLE literal+] Dovecot ready.\r\n");
    let Response::Untagged(Untagged::Status(Status::Ok, text)) = greeting else {
        panic!("{greeting:?}");
    };
    let code = text.code.clone().expect("code");
    assert_eq!(code.name, "CAPABILITY");
    assert_eq!(code.capabilities(), ["IMAP4REV1", "IDLE", "LITERAL+"]);
    assert_eq!(text.text, "Dovecot ready.");

    assert_eq!(
        parse(b"* OK [UIDVALIDITY 1795731805] UIDs valid\r\n"),
        Response::Untagged(Untagged::Status(
            Status::Ok,
            RespText {
                code: Some(Code {
                    name: "UIDVALIDITY".into(),
                    arg: Some("1795731805".into())
                }),
                text: "UIDs valid".into()
            }
        ))
    );
    assert_eq!(
        parse(b"a12 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
        Response::Tagged {
            tag: "a12".into(),
            status: Status::No,
            text: RespText {
                code: Some(Code {
                    name: "AUTHENTICATIONFAILED".into(),
                    arg: None
                }),
                text: "Authentication failed.".into()
            }
        }
    );
    assert_eq!(
        parse(b"t1 bad what\r\n"),
        Response::Tagged {
            tag: "t1".into(),
            status: Status::Bad,
            text: RespText {
                code: None,
                text: "what".into()
            }
        }
    );
    assert!(matches!(
        parse(b"* BYE Server shutting down.\r\n"),
        Response::Untagged(Untagged::Status(Status::Bye, _))
    ));
    assert!(matches!(
        parse(b"* PREAUTH welcome\r\n"),
        Response::Untagged(Untagged::Status(Status::PreAuth, _))
    ));
    assert_eq!(
        parse(b"+ idling\r\n"),
        Response::Continuation("idling".into())
    );
    assert_eq!(parse(b"+\r\n"), Response::Continuation(String::new()));
    assert!(parse_response(b"t1 MAYBE\r\n").is_err());
    assert!(parse_response(b"*\r\n").is_err());
}

#[test]
fn parses_mailbox_size_responses() {
    assert_eq!(
        parse(b"* 23 EXISTS\r\n"),
        Response::Untagged(Untagged::Exists(23))
    );
    assert_eq!(
        parse(b"* 1 recent\r\n"),
        Response::Untagged(Untagged::Recent(1))
    );
    assert_eq!(
        parse(b"* 4 EXPUNGE\r\n"),
        Response::Untagged(Untagged::Expunge(4))
    );
    assert_eq!(
        parse(b"* CAPABILITY IMAP4rev1 IDLE\r\n"),
        Response::Untagged(Untagged::Capability(vec![
            "IMAP4REV1".into(),
            "IDLE".into()
        ]))
    );
    assert!(matches!(
        parse(b"* FLAGS (\\Answered \\Seen)\r\n"),
        Response::Untagged(Untagged::Other(_))
    ));
    assert!(matches!(
        parse(b"* SEARCH 1 2 3\r\n"),
        Response::Untagged(Untagged::Other(_))
    ));
}

#[test]
fn parses_fetch_with_literals_quoted_and_other_attributes() {
    let r = parse(b"* 12 FETCH (UID 5 RFC822.SIZE 9 FLAGS (\\Seen $X) BODY[]<0> {11}\r\nab\r\n\r\n(c)\r\n)\r\n");
    assert_eq!(
        r,
        Response::Untagged(Untagged::Fetch(
            12,
            FetchData {
                uid: Some(5),
                size: Some(9),
                body: Some(b"ab\r\n\r\n(c)\r\n".to_vec())
            }
        ))
    );
    let r = parse(b"* 1 FETCH (BODY[] \"a \\\"q\\\" \\\\\" UID 2)\r\n");
    assert_eq!(
        r,
        Response::Untagged(Untagged::Fetch(
            1,
            FetchData {
                uid: Some(2),
                size: None,
                body: Some(b"a \"q\" \\".to_vec())
            }
        ))
    );
    // Sections with spaces, NIL, nested lists: read past, not mistaken for the body.
    let r = parse(b"* 3 FETCH (BODY[HEADER.FIELDS (SUBJECT FROM)] {2}\r\nhi ENVELOPE (NIL \"s\" ((NIL NIL \"a\" \"b\"))) BODY[] NIL UID 8)\r\n");
    assert_eq!(
        r,
        Response::Untagged(Untagged::Fetch(
            3,
            FetchData {
                uid: Some(8),
                size: None,
                body: None
            }
        ))
    );
    // A flag change elsewhere: a FETCH with nothing for us.
    assert_eq!(
        parse(b"* 2 FETCH (FLAGS (\\Seen))\r\n"),
        Response::Untagged(Untagged::Fetch(2, FetchData::default()))
    );
    assert!(parse_response(b"* 2 FETCH (UID)\r\n").is_err());
    assert!(parse_response(b"* 2 FETCH UID 3\r\n").is_err());
    assert!(parse_response(b"* 2 FETCH (BODY[] \"open)\r\n").is_err());
    assert!(parse_response(b"* 2 FETCH (BODY[] {10}\r\nab)\r\n").is_err());
}

#[test]
fn no_input_makes_the_reader_panic() {
    // Every prefix, and every single-byte corruption, of responses of each kind: framing
    // and parsing may refuse them but must not panic or loop.
    let samples: [&[u8]; 5] = [
        b"* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n",
        b"* 12 FETCH (UID 5 RFC822.SIZE 9 FLAGS (\\Seen) BODY[]<0> {4}\r\nab\r\n)\r\n",
        b"* 3 FETCH (BODY[HEADER.FIELDS (A)] \"q\\\"x\" ENVELOPE (NIL (NIL)))\r\n",
        b"t1 NO [ALERT] go away\r\n",
        b"+ idling\r\n",
    ];
    let specials = [
        b'{', b'}', b'(', b')', b'[', b']', b'"', b'\\', b'\r', b'\n', b' ', b'9', 0,
    ];
    for sample in samples {
        for end in 0..=sample.len() {
            let prefix = &sample[..end];
            if let Ok(Some(n)) = frame_len(prefix, BIG, BIG) {
                let _ = parse_response(&prefix[..n]);
            }
            let _ = parse_response(prefix);
        }
        for at in 0..sample.len() {
            for &b in &specials {
                let mut bytes = sample.to_vec();
                bytes[at] = b;
                if let Ok(Some(n)) = frame_len(&bytes, BIG, BIG) {
                    let _ = parse_response(&bytes[..n]);
                }
                let _ = parse_response(&bytes);
            }
        }
    }
}

/// The server's source avatar runs sessions on a multi-threaded runtime.
#[allow(dead_code)]
fn session_futures_are_send(client: &mut super::ImapClient, acc: &ImapAccount) {
    fn send<T: Send>(_: T) {}
    let cfg = ImapConfig::default();
    send(super::ImapClient::connect(acc, &cfg));
    send(client.fetch_new(None));
    send(client.idle(Duration::ZERO));
}

fn wire(cmd: Command) -> Vec<String> {
    cmd.into_wire("t1")
        .into_iter()
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .collect()
}

#[test]
fn writes_atoms_quoted_strings_and_literals() {
    let cmd = Command::new("LOGIN")
        .astring(b"bob@example.org", false)
        .astring(b"p ss\"\\", false);
    assert_eq!(wire(cmd), ["t1 LOGIN bob@example.org \"p ss\\\"\\\\\"\r\n"]);
    assert_eq!(
        wire(
            Command::new("LOGIN")
                .astring(b"", false)
                .astring(b"a*b", false)
        ),
        ["t1 LOGIN \"\" \"a*b\"\r\n"]
    );
    // Non-ASCII: a literal, non-synchronizing with LITERAL+...
    assert_eq!(
        wire(
            Command::new("LOGIN")
                .astring(b"bob", true)
                .astring("pä".as_bytes(), true)
        ),
        ["t1 LOGIN bob {3+}\r\npä\r\n"]
    );
    // ...and split for the server's "+" without it.
    assert_eq!(
        wire(
            Command::new("LOGIN")
                .astring("pä".as_bytes(), false)
                .astring(b"x", false)
        ),
        ["t1 LOGIN {3}\r\n", "pä x\r\n"]
    );
    assert_eq!(
        wire(Command::continued(
            "AUTHENTICATE",
            "PLAIN",
            b"AGE=".to_vec()
        )),
        ["t1 AUTHENTICATE PLAIN\r\n", "AGE=\r\n"]
    );
}

#[test]
fn mailbox_names_in_modified_utf7() {
    // The example of RFC 3501 §5.1.3.
    assert_eq!(
        encode_mailbox("~peter/mail/台北/日本語"),
        "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    );
    assert_eq!(encode_mailbox("A&B"), "A&-B");
    assert_eq!(encode_mailbox("Entwürfe"), "Entw&APw-rfe");
    assert_eq!(encode_mailbox("😀"), "&2D3eAA-");
    assert_eq!(
        wire(Command::new("EXAMINE").mailbox("inbox", false)),
        ["t1 EXAMINE INBOX\r\n"]
    );
    assert_eq!(
        wire(Command::new("EXAMINE").mailbox("My Folder", false)),
        ["t1 EXAMINE \"My Folder\"\r\n"]
    );
}

#[test]
fn base64_and_uid_sets() {
    assert_eq!(base64(b"", b'/', true), "");
    assert_eq!(base64(b"f", b'/', true), "Zg==");
    assert_eq!(base64(b"fo", b'/', true), "Zm8=");
    assert_eq!(base64(b"foo", b'/', true), "Zm9v");
    assert_eq!(base64(b"\0bob\0secret", b'/', true), "AGJvYgBzZWNyZXQ=");
    assert_eq!(base64(&[0xff, 0xff], b',', false), "//8".replace('/', ","));
    assert_eq!(uid_set(&[3]), "3");
    assert_eq!(uid_set(&[3, 4, 5, 9, 11, 12]), "3:5,9,11:12");
    assert_eq!(uid_set(&[u32::MAX - 1, u32::MAX]), "4294967294:4294967295");
}

// --- The session against scripted servers -------------------------------------------

fn account() -> ImapAccount {
    ImapAccount {
        host: "imap.test".into(),
        port: 143,
        tls: TlsMode::Plain,
        username: "bob".into(),
        password: "secret".into(),
        folder: "INBOX".into(),
    }
}

fn config() -> ImapConfig {
    ImapConfig {
        read_timeout: Duration::from_secs(5),
        max_message_bytes: 1000,
        ..ImapConfig::default()
    }
}

/// A server that sends `greeting`, then for each step reads one line (through CRLF;
/// literal data arrives as lines of its own), checks it, and writes the reply. Ends by
/// reading until the client hangs up, so that the client never sees the pipe close early.
fn serve(
    server: DuplexStream,
    greeting: &'static str,
    steps: Vec<(&'static str, String)>,
) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let mut server = BufReader::new(server);
        let io = |e: std::io::Error| e.to_string();
        server
            .get_mut()
            .write_all(greeting.as_bytes())
            .await
            .map_err(io)?;
        for (expected, reply) in steps {
            let mut line = Vec::new();
            server.read_until(b'\n', &mut line).await.map_err(io)?;
            let line = String::from_utf8_lossy(&line);
            if line.trim_end_matches("\r\n") != expected {
                return Err(format!("expected {expected:?}, got {line:?}"));
            }
            server
                .get_mut()
                .write_all(reply.as_bytes())
                .await
                .map_err(io)?;
        }
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut server, &mut rest).await;
        Ok(())
    })
}

fn examine_reply(tag: &str, exists: u32, uidnext: Option<u32>) -> String {
    let next = uidnext
        .map(|n| format!("* OK [UIDNEXT {n}] Predicted next UID\r\n"))
        .unwrap_or_default();
    format!(
        "* FLAGS (\\Seen)\r\n* {exists} EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 9] UIDs valid\r\n{next}{tag} OK [READ-ONLY] Examine completed\r\n"
    )
}

async fn finish(client: super::ImapClient, server: JoinHandle<Result<(), String>>) {
    drop(client);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("scripted server: {e}"),
        Err(e) => panic!("scripted server panicked: {e}"),
    }
}

#[tokio::test]
async fn sync_literal_login_baseline_without_uidnext_and_partial_fetch() {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let server = serve(
        server_end,
        "* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n",
        vec![
            ("t1 LOGIN bob {6}", "+ go on\r\n".into()),
            ("pä ss", "t1 OK [CAPABILITY IMAP4rev1 IDLE] in\r\n".into()),
            ("t2 EXAMINE INBOX", examine_reply("t2", 3, None)),
            ("t3 EXAMINE INBOX", examine_reply("t3", 3, None)),
            (
                "t4 UID FETCH * (UID)",
                "* 3 FETCH (UID 41)\r\nt4 OK done\r\n".into(),
            ),
            ("t5 EXAMINE INBOX", examine_reply("t5", 4, None)),
            (
                "t6 UID FETCH 42:* (UID RFC822.SIZE)",
                "* 3 FETCH (UID 41 RFC822.SIZE 10)\r\n* 4 FETCH (UID 44 RFC822.SIZE 12)\r\n* 1 FETCH (FLAGS (\\Seen))\r\nt6 OK done\r\n".into(),
            ),
            (
                "t7 UID FETCH 44 (UID BODY.PEEK[]<0.1001>)",
                "* 4 FETCH (UID 44 BODY[]<0> {12}\r\nSubject: x\r\n)\r\nt7 OK done\r\n".into(),
            ),
        ],
    );
    let acc = ImapAccount {
        password: "pä ss".into(),
        ..account()
    };
    let mut client = over_stream(client_end, &acc, &config())
        .await
        .expect("login");
    assert!(client.supports_idle());
    let (mails, cursor, warnings) = client.fetch_new(None).await.expect("baseline");
    assert!(mails.is_empty() && warnings.is_empty());
    assert_eq!(
        cursor,
        ImapCursor {
            uid_validity: 9,
            last_uid: 41
        }
    );
    let (mails, cursor, warnings) = client.fetch_new(Some(cursor)).await.expect("fetch");
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].uid, 44);
    assert_eq!(mails[0].raw, b"Subject: x\r\n");
    assert_eq!(cursor.last_uid, 44);
    finish(client, server).await;
}

#[tokio::test]
async fn sizes_that_lie_oversized_and_vanished_messages_are_skipped_with_warnings() {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let server = serve(
        server_end,
        "* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n",
        vec![
            ("t1 LOGIN bob secret", "t1 OK [CAPABILITY IMAP4rev1] in\r\n".into()),
            ("t2 EXAMINE INBOX", examine_reply("t2", 9, Some(10))),
            ("t3 EXAMINE INBOX", examine_reply("t3", 9, Some(10))),
            (
                "t4 UID FETCH 5:* (UID RFC822.SIZE)",
                "* 5 FETCH (UID 5 RFC822.SIZE 5)\r\n* 6 FETCH (UID 6 RFC822.SIZE 50)\r\n* 7 FETCH (UID 7 RFC822.SIZE 3)\r\n* 8 FETCH (UID 8 RFC822.SIZE 4)\r\n* 9 FETCH (UID 9 RFC822.SIZE 4)\r\nt4 OK done\r\n".into(),
            ),
            (
                // The server ignores the partial range and sends all 12 bytes of UID 5.
                "t5 UID FETCH 5,7:8 (UID BODY.PEEK[]<0.11>)",
                "* 5 FETCH (UID 5 BODY[] {12}\r\n0123456789ab)\r\n* 8 FETCH (UID 8 BODY[]<0> {4}\r\nabcd)\r\nt5 OK done\r\n".into(),
            ),
        ],
    );
    let cfg = ImapConfig {
        max_message_bytes: 10,
        max_messages_per_fetch: 3,
        ..config()
    };
    let mut client = over_stream(client_end, &account(), &cfg)
        .await
        .expect("login");
    assert!(!client.supports_idle());
    let cursor = ImapCursor {
        uid_validity: 9,
        last_uid: 4,
    };
    let (mails, next, warnings) = client.fetch_new(Some(cursor)).await.expect("fetch");
    assert_eq!(mails.len(), 1);
    assert_eq!((mails[0].uid, mails[0].raw.as_slice()), (8, &b"abcd"[..]));
    // UID 9 waits for the next call: three messages per call (6 was skipped, not read).
    assert_eq!(next.last_uid, 8);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("UID 6 is 50 bytes"), "{warnings:?}");
    assert!(warnings[1].contains("UID 5 is 12 bytes"), "{warnings:?}");
    assert!(warnings[2].contains("UID 7 was deleted"), "{warnings:?}");
    finish(client, server).await;
}

#[tokio::test]
async fn nothing_new_asks_nothing_more_and_a_new_uidvalidity_rebaselines() {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let server = serve(
        server_end,
        "* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n",
        vec![
            (
                "t1 LOGIN bob secret",
                "t1 OK [CAPABILITY IMAP4rev1] in\r\n".into(),
            ),
            ("t2 EXAMINE INBOX", examine_reply("t2", 2, Some(3))),
            ("t3 EXAMINE INBOX", examine_reply("t3", 2, Some(3))),
            ("t4 EXAMINE INBOX", examine_reply("t4", 2, Some(3))),
        ],
    );
    let mut client = over_stream(client_end, &account(), &config())
        .await
        .expect("login");
    let cursor = ImapCursor {
        uid_validity: 9,
        last_uid: 2,
    };
    let (mails, next, warnings) = client.fetch_new(Some(cursor)).await.expect("fetch");
    assert!(mails.is_empty() && warnings.is_empty());
    assert_eq!(next, cursor);
    let stale = ImapCursor {
        uid_validity: 8,
        last_uid: 100,
    };
    let (mails, next, warnings) = client.fetch_new(Some(stale)).await.expect("fetch");
    assert!(mails.is_empty());
    assert_eq!(next, cursor);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("UIDVALIDITY 8 is now 9"),
        "{warnings:?}"
    );
    finish(client, server).await;
}

#[tokio::test]
async fn refused_login_is_an_auth_error_for_the_user() {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let server = serve(
        server_end,
        "* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n",
        vec![(
            "t1 LOGIN bob secret",
            "t1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".into(),
        )],
    );
    let err = over_stream(client_end, &account(), &config())
        .await
        .expect_err("refused");
    assert_eq!(
        err,
        ImapError::Auth(
            "the IMAP server refused the login of \"bob\": Authentication failed.".into()
        )
    );
    assert!(server.await.is_ok());
}

#[tokio::test]
async fn authenticate_plain_where_login_is_disabled() {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let server = serve(
        server_end,
        "* OK [CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=PLAIN] hi\r\n",
        vec![
            ("t1 AUTHENTICATE PLAIN", "+ \r\n".into()),
            ("AGJvYgBzZWNyZXQ=", "t1 OK in\r\n".into()),
            (
                "t2 CAPABILITY",
                "* CAPABILITY IMAP4rev1 IDLE\r\nt2 OK done\r\n".into(),
            ),
            ("t3 EXAMINE INBOX", examine_reply("t3", 0, Some(1))),
        ],
    );
    let client = over_stream(client_end, &account(), &config())
        .await
        .expect("login");
    assert!(client.supports_idle());
    finish(client, server).await;
}

#[tokio::test]
async fn greeting_bye_missing_folder_and_silence_are_clear_errors() {
    let (client_end, server_end) = tokio::io::duplex(1024);
    let server = serve(server_end, "* BYE Too many connections\r\n", vec![]);
    let err = over_stream(client_end, &account(), &config()).await.err();
    assert_eq!(
        err,
        Some(ImapError::Connect(
            "the server turned the connection away: Too many connections".into()
        ))
    );
    assert!(server.await.is_ok());

    let (client_end, server_end) = tokio::io::duplex(1024);
    let server = serve(
        server_end,
        "* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n",
        vec![
            ("t1 LOGIN bob secret", "t1 OK in\r\n".into()),
            (
                "t2 CAPABILITY",
                "* CAPABILITY IMAP4rev1\r\nt2 OK done\r\n".into(),
            ),
            (
                "t3 EXAMINE Nope",
                "t3 NO Mailbox doesn't exist: Nope\r\n".into(),
            ),
        ],
    );
    let acc = ImapAccount {
        folder: "Nope".into(),
        ..account()
    };
    let err = over_stream(client_end, &acc, &config()).await.err();
    assert_eq!(err, Some(ImapError::NoFolder("Nope".into())));
    assert!(server.await.is_ok());

    let (client_end, server_end) = tokio::io::duplex(1024);
    let server = serve(
        server_end,
        "* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n",
        vec![("t1 LOGIN bob secret", String::new())],
    );
    let cfg = ImapConfig {
        read_timeout: Duration::from_millis(200),
        ..config()
    };
    let err = over_stream(client_end, &account(), &cfg).await.err();
    assert_eq!(err, Some(ImapError::Timeout));
    assert!(server.await.is_ok());
}

#[tokio::test]
async fn idle_wakes_on_exists_renews_and_a_failed_session_stays_failed() {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let server = serve(
        server_end,
        "* OK [CAPABILITY IMAP4rev1 IDLE LITERAL+] hi\r\n",
        vec![
            (
                "t1 LOGIN bob secret",
                "t1 OK [CAPABILITY IMAP4rev1 IDLE] in\r\n".into(),
            ),
            ("t2 EXAMINE INBOX", examine_reply("t2", 1, Some(2))),
            (
                "t3 IDLE",
                "+ idling\r\n* OK Still here\r\n* 2 EXISTS\r\n* 1 RECENT\r\n".into(),
            ),
            ("DONE", "t3 OK Idle completed.\r\n".into()),
            // No news: renewed every second (the shortest round), then the time is up.
            ("t4 IDLE", "+ idling\r\n".into()),
            ("DONE", "t4 OK Idle completed.\r\n".into()),
            ("t5 IDLE", "+ idling\r\n".into()),
            ("DONE", "t5 OK Idle completed.\r\n".into()),
            ("t6 EXAMINE INBOX", "t6 BAD Something odd\r\n".into()),
        ],
    );
    let cfg = ImapConfig {
        idle_refresh: Duration::from_millis(10),
        ..config()
    };
    let mut client = over_stream(client_end, &account(), &cfg)
        .await
        .expect("login");
    let woke = client.idle(Duration::from_secs(5)).await.expect("idle");
    assert!(woke);
    let started = std::time::Instant::now();
    let woke = client
        .idle(Duration::from_millis(1500))
        .await
        .expect("idle");
    assert!(!woke);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let err = client.fetch_new(None).await.err();
    assert!(
        matches!(&err, Some(ImapError::Protocol(text)) if text.contains("rejected as malformed EXAMINE: Something odd")),
        "{err:?}"
    );
    let err = client.fetch_new(None).await.err();
    assert!(
        matches!(&err, Some(ImapError::Protocol(text)) if text.contains("connect again")),
        "{err:?}"
    );
    finish(client, server).await;
}
