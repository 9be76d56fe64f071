//! The SMTP protocol of one connection, without I/O.
//!
//! The driver feeds received bytes with [`Session::receive`] and asks [`Session::next_event`]
//! what to do; replies accumulate in an output buffer it writes out (with
//! [`Session::take_output`]) whenever the session needs input, so a pipelined batch of
//! commands is answered in order with one write. Checks and deliveries that need the outside
//! world come out as events; their results go back in through
//! [`Session::recipient_checked`] and [`Session::delivered`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use smtp_proto::Request;

use super::{AcceptedMail, MAX_DATA_LINE_BYTES, Recipient, Refusal, SmtpConfig};

/// Commands that were refused as bad (unknown, out of sequence, malformed) before the
/// connection is closed: a client that keeps getting it wrong is not a mail client.
const MAX_BAD_COMMANDS: u32 = 20;

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Write out the pending output, then read more and [`Session::receive`] it.
    NeedInput,
    /// Look the recipient up, then call [`Session::recipient_checked`].
    CheckRecipient(Recipient),
    /// Make the message durable, then call [`Session::delivered`].
    Deliver(AcceptedMail),
    /// Write out the pending output (the 220), start TLS on the connection, then call
    /// [`Session::tls_started`]. Anything the client pipelined after STARTTLS was dropped.
    StartTls,
    /// Write out the pending output and close the connection.
    Close,
}

#[derive(Debug)]
enum Phase {
    Command,
    Data(Box<DataReader>),
    Closed,
}

#[derive(Debug)]
enum Waiting {
    Recipient(Recipient),
    Delivery,
}

#[derive(Debug)]
struct Transaction {
    mail_from: String,
    recipients: Vec<Recipient>,
}

/// One SMTP connection's state.
#[derive(Debug)]
pub struct Session {
    cfg: Arc<SmtpConfig>,
    peer: SocketAddr,
    /// Received bytes; those before `start` are consumed.
    input: Vec<u8>,
    start: usize,
    output: Vec<u8>,
    phase: Phase,
    helo: Option<String>,
    tls_active: bool,
    tx: Option<Transaction>,
    waiting: Option<Waiting>,
    /// An over-long command line is being skipped up to its LF.
    discarding_line: bool,
    window_start: i64,
    window_commands: u32,
    bad_commands: u32,
}

impl Session {
    /// A new connection from `peer`; the greeting is already in the output.
    pub fn new(cfg: Arc<SmtpConfig>, peer: SocketAddr) -> Session {
        let mut s = Session {
            cfg,
            peer,
            input: Vec::new(),
            start: 0,
            output: Vec::new(),
            phase: Phase::Command,
            helo: None,
            tls_active: false,
            tx: None,
            waiting: None,
            discarding_line: false,
            window_start: i64::MIN,
            window_commands: 0,
            bad_commands: 0,
        };
        // RFC 2034: no enhanced status code on the greeting.
        let greeting = format!("{} ESMTP tidings", s.cfg.hostname);
        s.line(220, None, &greeting);
        s
    }

    /// What to tell a client that connects while all connection slots are taken.
    pub fn busy_reply(hostname: &str) -> Vec<u8> {
        let mut s = Vec::new();
        write_reply(
            &mut s,
            421,
            Some("4.3.2"),
            &format!("{hostname} Too many connections, try again later"),
        );
        s
    }

    /// Bytes received from the client.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The replies produced so far, to be written to the client in order.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Whether replies are waiting to be written.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Whether the connection is done (QUIT, a 421, ...).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Whether a mail transaction is under way (after MAIL, until the end of DATA or RSET).
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some() || self.waiting.is_some() || matches!(self.phase, Phase::Data(_))
    }

    /// Whether TLS is active on the connection.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// The client stayed silent too long: 421 4.4.2, then close.
    pub fn idle_timeout(&mut self) {
        self.close_with(421, "4.4.2", "Idle timeout, closing connection");
    }

    /// The server is shutting down: 421 4.3.2, then close.
    pub fn shutdown(&mut self) {
        self.close_with(421, "4.3.2", "Service shutting down, try again later");
    }

    /// The TLS handshake that [`Event::StartTls`] asked for succeeded. The session state was
    /// already reset (RFC 3207 §4.2): the client must EHLO again.
    pub fn tls_started(&mut self) {
        self.tls_active = true;
    }

    /// The envelope sender of the transaction in progress (empty for `<>` or none).
    pub fn mail_from(&self) -> &str {
        self.tx.as_ref().map_or("", |t| t.mail_from.as_str())
    }

    /// The result of the lookup asked for by [`Event::CheckRecipient`].
    pub fn recipient_checked(&mut self, result: Result<(), Refusal>) {
        let Some(Waiting::Recipient(rcpt)) = self.waiting.take() else {
            return;
        };
        match result {
            Ok(()) => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.recipients.push(rcpt);
                }
                self.line(250, Some("2.1.5"), "Recipient OK");
            }
            Err(Refusal::UnknownUser) => {
                self.line(550, Some("5.1.1"), "No such user here");
            }
            Err(Refusal::NotAllowed(text)) => {
                self.line(550, Some("5.7.1"), &text);
            }
            Err(Refusal::Temporary(text)) => {
                let text = if text.trim().is_empty() {
                    "Temporary failure, try again later".to_owned()
                } else {
                    text
                };
                self.line(451, Some("4.3.0"), &text);
            }
        }
    }

    /// The result of the delivery asked for by [`Event::Deliver`]: Ok only once durable.
    pub fn delivered(&mut self, result: Result<(), String>) {
        if !matches!(self.waiting, Some(Waiting::Delivery)) {
            return;
        }
        self.waiting = None;
        match result {
            Ok(()) => self.line(250, Some("2.0.0"), "Message accepted"),
            // The sink's error is for the operator's log, not for the client.
            Err(_) => self.line(
                451,
                Some("4.3.0"),
                "Temporary failure storing the message, try again later",
            ),
        }
    }

    /// Advance: consume buffered input until something has to happen outside.
    /// `now_ms` is the wall clock in unix ms (command rate, `received_at`).
    pub fn next_event(&mut self, now_ms: i64) -> Event {
        // A driver that did not report the result of a check or a delivery gets the safe
        // answer for it: a temporary failure.
        match self.waiting {
            Some(Waiting::Recipient(_)) => {
                self.recipient_checked(Err(Refusal::Temporary(String::new())))
            }
            Some(Waiting::Delivery) => self.delivered(Err(String::new())),
            None => {}
        }
        loop {
            match &mut self.phase {
                Phase::Closed => return Event::Close,
                Phase::Command => {
                    if let Some(event) = self.next_command(now_ms) {
                        return event;
                    }
                    continue;
                }
                Phase::Data(reader) => {
                    let rest = &self.input[self.start..];
                    let (used, done) = reader.feed(rest, &self.cfg);
                    self.start += used;
                    if !done {
                        return Event::NeedInput;
                    }
                }
            }
            // The message ended: back to commands, and answer it.
            if let Phase::Data(reader) = std::mem::replace(&mut self.phase, Phase::Command)
                && let Some(event) = self.end_of_data(*reader, now_ms)
            {
                return event;
            }
        }
    }

    /// Handles at most one command line; `None` to go on.
    fn next_command(&mut self, now_ms: i64) -> Option<Event> {
        let rest = &self.input[self.start..];
        let lf = rest.iter().position(|&b| b == b'\n');
        if self.discarding_line {
            match lf {
                Some(pos) => {
                    self.start += pos + 1;
                    self.discarding_line = false;
                    return None;
                }
                None => {
                    self.start = self.input.len();
                    return Some(Event::NeedInput);
                }
            }
        }
        let Some(pos) = lf else {
            if rest.len() >= self.cfg.max_line_bytes {
                // Never buffer a line past the limit: answer now and skip the rest of it.
                self.start = self.input.len();
                self.discarding_line = true;
                self.bad(500, "5.5.2", "Line too long");
                if self.is_closed() {
                    return Some(Event::Close);
                }
            }
            return Some(Event::NeedInput);
        };
        let line_start = self.start;
        self.start += pos + 1;

        if !self.count_command(now_ms) {
            return Some(Event::Close);
        }
        let line = &self.input[line_start..=line_start + pos];
        let problem = if line.len() > self.cfg.max_line_bytes {
            Some("Line too long")
        } else if line.len() < 2 || line[line.len() - 2] != b'\r' {
            Some("Bare LF not allowed, lines end with CRLF")
        } else if line[..line.len() - 2].contains(&b'\r') {
            Some("Bare CR not allowed, lines end with CRLF")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.bad(500, "5.5.2", problem);
            return self.is_closed().then_some(Event::Close);
        }
        if looks_like_http(line) {
            // Cross-protocol requests (a browser tricked into POSTing here): stop at once.
            self.close_with(421, "4.7.0", "This is an SMTP server, closing connection");
            return Some(Event::Close);
        }
        // Parse a copy so the input buffer stays free for the state changes below.
        let line = line.to_vec();
        let mut bytes = line.iter();
        match Request::parse(&mut bytes) {
            Ok(request) => self.command(request),
            Err(err) => {
                self.refuse_syntax(err);
                self.is_closed().then_some(Event::Close)
            }
        }
    }

    fn command(&mut self, request: Request<Cow<'_, str>>) -> Option<Event> {
        match request {
            Request::Ehlo { host } => {
                self.tx = None;
                self.helo = Some(host.into_owned());
                self.ehlo_reply();
            }
            Request::Helo { host } => {
                self.tx = None;
                self.helo = Some(host.into_owned());
                let text = self.cfg.hostname.clone();
                self.line(250, None, &text);
            }
            Request::Mail { from } => {
                if self.helo.is_none() {
                    self.bad(503, "5.5.1", "Send EHLO or HELO first");
                } else if self.tx.is_some() {
                    self.bad(503, "5.5.1", "Nested MAIL command");
                } else if from.size > self.cfg.max_message_bytes {
                    let text = format!(
                        "Message size exceeds fixed limit of {} bytes",
                        self.cfg.max_message_bytes
                    );
                    self.line(552, Some("5.3.4"), &text);
                } else {
                    self.tx = Some(Transaction {
                        mail_from: from.address.into_owned(),
                        recipients: Vec::new(),
                    });
                    self.line(250, Some("2.1.0"), "Sender OK");
                }
            }
            Request::Rcpt { to } => return self.rcpt(&to.address),
            Request::Data => match &self.tx {
                None => self.bad(503, "5.5.1", "Need MAIL command"),
                Some(tx) if tx.recipients.is_empty() => {
                    // RFC 2920 §3.1: a pipelined DATA after refused recipients gets 554.
                    self.line(554, Some("5.5.1"), "No valid recipients");
                }
                Some(_) => {
                    self.line(354, None, "End data with <CR><LF>.<CR><LF>");
                    self.phase = Phase::Data(Box::new(DataReader::new()));
                }
            },
            Request::Rset => {
                self.tx = None;
                self.line(250, Some("2.0.0"), "OK");
            }
            Request::Noop { .. } => self.line(250, Some("2.0.0"), "OK"),
            Request::Quit => {
                let text = format!("{} closing connection", self.cfg.hostname);
                self.close_with(221, "2.0.0", &text);
                return Some(Event::Close);
            }
            Request::Vrfy { .. } => self.line(
                252,
                Some("2.5.0"),
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Request::Help { .. } => self.line(
                214,
                Some("2.0.0"),
                "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS",
            ),
            Request::StartTls => return self.starttls(),
            Request::Lhlo { .. } => self.bad(500, "5.5.2", "Command unrecognized"),
            Request::Expn { .. }
            | Request::Bdat { .. }
            | Request::Auth { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.bad(502, "5.5.1", "Command not implemented"),
        }
        self.is_closed().then_some(Event::Close)
    }

    fn rcpt(&mut self, address: &str) -> Option<Event> {
        let Some(tx) = &self.tx else {
            self.bad(503, "5.5.1", "Need MAIL command");
            return self.is_closed().then_some(Event::Close);
        };
        if tx.recipients.len() >= self.cfg.max_recipients {
            self.line(452, Some("4.5.3"), "Too many recipients");
            return None;
        }
        match parse_recipient(address, &self.cfg.mail_domain) {
            Err(RcptProblem::Relay) => {
                self.line(550, Some("5.7.1"), "Relaying denied");
                None
            }
            Err(RcptProblem::Syntax) => {
                self.line(501, Some("5.1.3"), "Bad recipient address syntax");
                None
            }
            Ok(rcpt) if tx.recipients.contains(&rcpt) => {
                self.line(250, Some("2.1.5"), "Recipient OK");
                None
            }
            Ok(rcpt) => {
                self.waiting = Some(Waiting::Recipient(rcpt.clone()));
                Some(Event::CheckRecipient(rcpt))
            }
        }
    }

    fn starttls(&mut self) -> Option<Event> {
        if self.cfg.tls.is_none() {
            self.bad(502, "5.5.1", "STARTTLS not available");
        } else if self.tls_active {
            self.bad(503, "5.5.1", "TLS already active");
        } else if self.helo.is_none() {
            self.bad(503, "5.5.1", "Send EHLO first");
        } else {
            self.line(220, Some("2.0.0"), "Ready to start TLS");
            // RFC 3207 §4.2 and CVE-2011-0411: nothing sent before the handshake may be
            // taken as a command after it, and what was said before counts for nothing.
            self.input.clear();
            self.start = 0;
            self.tx = None;
            self.helo = None;
            return Some(Event::StartTls);
        }
        self.is_closed().then_some(Event::Close)
    }

    fn end_of_data(&mut self, reader: DataReader, now_ms: i64) -> Option<Event> {
        let tx = self.tx.take();
        if let Some(fault) = reader.fault {
            match fault {
                DataFault::BareNewline => self.line(
                    550,
                    Some("5.6.11"),
                    "Bare CR or LF not allowed in message text, lines end with CRLF",
                ),
                DataFault::TooBig => {
                    let text = format!(
                        "Message too big, the limit is {} bytes",
                        self.cfg.max_message_bytes
                    );
                    self.line(552, Some("5.3.4"), &text);
                }
                DataFault::HeaderTooBig => {
                    let text = format!(
                        "Header section too big, the limit is {} bytes",
                        self.cfg.max_header_bytes
                    );
                    self.line(552, Some("5.3.4"), &text);
                }
                DataFault::LineTooLong => {
                    let text = format!("Line too long, the limit is {MAX_DATA_LINE_BYTES} bytes");
                    self.line(554, Some("5.6.0"), &text);
                }
            }
            return None;
        }
        let Some(tx) = tx else {
            // DATA is only entered with a transaction; be safe anyway.
            self.line(503, Some("5.5.1"), "Need MAIL command");
            return None;
        };
        self.waiting = Some(Waiting::Delivery);
        Some(Event::Deliver(AcceptedMail {
            mail_from: tx.mail_from,
            recipients: tx.recipients,
            raw: reader.body,
            received_at: now_ms,
            peer: self.peer,
            helo: self.helo.clone().unwrap_or_default(),
        }))
    }

    /// Counts a command against the per-minute limit; false when over it (and closed).
    fn count_command(&mut self, now_ms: i64) -> bool {
        if now_ms.saturating_sub(self.window_start) >= 60_000 || now_ms < self.window_start {
            self.window_start = now_ms;
            self.window_commands = 0;
        }
        self.window_commands += 1;
        if self.window_commands > self.cfg.max_commands_per_minute {
            self.close_with(421, "4.7.0", "Too many commands, slow down");
            return false;
        }
        true
    }

    fn ehlo_reply(&mut self) {
        let mut lines = vec![
            format!(
                "{} Hello {}",
                self.cfg.hostname,
                self.helo.as_deref().unwrap_or_default()
            ),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.cfg.max_message_bytes),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "SMTPUTF8".to_owned(),
        ];
        if self.cfg.tls.is_some() && !self.tls_active {
            lines.push("STARTTLS".to_owned());
        }
        lines.push("HELP".to_owned());
        let last = lines.len() - 1;
        for (i, text) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.output
                .extend_from_slice(format!("250{sep}{}\r\n", sanitize(text)).as_bytes());
        }
    }

    fn refuse_syntax(&mut self, err: smtp_proto::Error) {
        use smtp_proto::Error as E;
        match err {
            E::UnknownCommand => self.bad(500, "5.5.2", "Command unrecognized"),
            E::InvalidSenderAddress => self.bad(501, "5.1.7", "Bad sender address syntax"),
            E::InvalidRecipientAddress => self.bad(501, "5.1.3", "Bad recipient address syntax"),
            E::SyntaxError { syntax } => self.bad(501, "5.5.4", &format!("Syntax: {syntax}")),
            E::InvalidParameter { param } => {
                self.bad(501, "5.5.4", &format!("Invalid parameter {param}"))
            }
            E::UnsupportedParameter { param } => {
                self.bad(555, "5.5.4", &format!("Unsupported parameter {param}"))
            }
            _ => self.bad(501, "5.5.4", "Syntax error"),
        }
    }

    /// A refusal of a bad command; too many of them close the connection.
    fn bad(&mut self, code: u16, enhanced: &str, text: &str) {
        self.bad_commands += 1;
        if self.bad_commands > MAX_BAD_COMMANDS {
            self.close_with(421, "4.7.0", "Too many errors, closing connection");
        } else {
            self.line(code, Some(enhanced), text);
        }
    }

    fn close_with(&mut self, code: u16, enhanced: &str, text: &str) {
        if self.is_closed() {
            return;
        }
        self.line(code, Some(enhanced), text);
        self.phase = Phase::Closed;
        self.tx = None;
        self.waiting = None;
    }

    fn line(&mut self, code: u16, enhanced: Option<&str>, text: &str) {
        write_reply(&mut self.output, code, enhanced, text);
    }
}

fn write_reply(out: &mut Vec<u8>, code: u16, enhanced: Option<&str>, text: &str) {
    let text = sanitize(text);
    let line = match enhanced {
        Some(enh) => format!("{code} {enh} {text}\r\n"),
        None => format!("{code} {text}\r\n"),
    };
    out.extend_from_slice(line.as_bytes());
}

/// Reply text echoes client input and sink errors: never let it break the reply framing.
fn sanitize(text: &str) -> Cow<'_, str> {
    const MAX: usize = 400;
    if text.len() <= MAX && !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX)
            .collect(),
    )
}

fn looks_like_http(line: &[u8]) -> bool {
    const METHODS: [&[u8]; 6] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"CONNECT ",
        b"OPTIONS ",
    ];
    METHODS
        .iter()
        .any(|m| line.len() >= m.len() && line[..m.len()].eq_ignore_ascii_case(m))
}

enum RcptProblem {
    Relay,
    Syntax,
}

/// `user[+label]@mail_domain` → the recipient; any other domain is relaying.
fn parse_recipient(address: &str, mail_domain: &str) -> Result<Recipient, RcptProblem> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        // `<postmaster>` alone (RFC 5321 §4.5.1) and empty paths have no domain of ours.
        return Err(RcptProblem::Relay);
    };
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if !domain.eq_ignore_ascii_case(mail_domain) {
        return Err(RcptProblem::Relay);
    }
    let local = local.to_lowercase();
    let (user, label) = match local.split_once('+') {
        Some((user, label)) => (user, (!label.is_empty()).then(|| label.to_owned())),
        None => (local.as_str(), None),
    };
    if user.is_empty() {
        return Err(RcptProblem::Syntax);
    }
    Ok(Recipient {
        local: user.to_owned(),
        label,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataFault {
    BareNewline,
    TooBig,
    HeaderTooBig,
    LineTooLong,
}

/// Reads the message text after DATA, byte-exact: only CRLF ends a line, only a line that is
/// exactly "." ends the message, a leading dot is unstuffed, and nothing is buffered once the
/// message is known to be refused.
#[derive(Debug)]
struct DataReader {
    body: Vec<u8>,
    /// Unstuffed bytes seen, buffered or not.
    size: usize,
    /// Bytes on the current line so far (after an unstuffed dot).
    line_len: usize,
    at_line_start: bool,
    /// The current line began with a dot (removed).
    dotted: bool,
    /// A CR was read; whether it starts a CRLF depends on the next byte.
    pending_cr: bool,
    in_header: bool,
    header_bytes: usize,
    fault: Option<DataFault>,
}

impl DataReader {
    fn new() -> DataReader {
        DataReader {
            body: Vec::new(),
            size: 0,
            line_len: 0,
            at_line_start: true,
            dotted: false,
            pending_cr: false,
            in_header: true,
            header_bytes: 0,
            fault: None,
        }
    }

    /// Consumes bytes up to and including the terminating CRLF.CRLF, if it is there.
    /// Returns the bytes used and whether the message ended.
    fn feed(&mut self, input: &[u8], cfg: &SmtpConfig) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    i += 1;
                    if self.dotted && self.line_len == 0 {
                        return (i, true);
                    }
                    self.end_line(cfg);
                    continue;
                }
                // A CR not followed by LF is text, and refused.
                self.set_fault(DataFault::BareNewline);
                self.emit(b"\r", true, cfg);
            }
            if self.at_line_start {
                self.at_line_start = false;
                if b == b'.' {
                    self.dotted = true;
                    i += 1;
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.pending_cr = true;
                    i += 1;
                }
                b'\n' => {
                    // A bare LF ends no line: what follows is not at a line start, so
                    // "\n.\n" and "\n.\r\n" cannot end the message.
                    self.set_fault(DataFault::BareNewline);
                    self.emit(b"\n", true, cfg);
                    i += 1;
                }
                _ => {
                    let run = input[i..]
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(input.len() - i);
                    self.emit(&input[i..i + run], true, cfg);
                    i += run;
                }
            }
        }
        (i, false)
    }

    fn end_line(&mut self, cfg: &SmtpConfig) {
        let blank = self.line_len == 0 && !self.dotted;
        self.emit(b"\r\n", false, cfg);
        if self.in_header && blank {
            self.in_header = false;
        }
        self.line_len = 0;
        self.dotted = false;
        self.at_line_start = true;
    }

    /// Adds message bytes; `text` for a line's content, false for its CRLF.
    fn emit(&mut self, bytes: &[u8], text: bool, cfg: &SmtpConfig) {
        self.size = self.size.saturating_add(bytes.len());
        if text {
            self.line_len = self.line_len.saturating_add(bytes.len());
            if self.line_len > MAX_DATA_LINE_BYTES {
                self.set_fault(DataFault::LineTooLong);
            }
        }
        if self.in_header {
            self.header_bytes = self.header_bytes.saturating_add(bytes.len());
            if self.header_bytes > cfg.max_header_bytes {
                self.set_fault(DataFault::HeaderTooBig);
            }
        }
        if self.size > cfg.max_message_bytes {
            self.set_fault(DataFault::TooBig);
        }
        if self.fault.is_none() {
            self.body.extend_from_slice(bytes);
        }
    }

    fn set_fault(&mut self, fault: DataFault) {
        if self.fault.is_none() {
            self.fault = Some(fault);
            // The message will be refused: stop holding it.
            self.body = Vec::new();
        }
    }
}
