//! A minimal Server-Sent Events reader over a reqwest response: yields each event with
//! the instant its last chunk arrived (taken before parsing, so parsing does not count
//! toward a measured latency).

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// One SSE event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// The `event:` field; "message" when absent.
    pub event: String,
    pub id: String,
    pub data: String,
}

/// Longest line accepted; a longer one means the stream is not what we expect.
const MAX_LINE: usize = 4 * 1024 * 1024;

/// Incremental SSE parser (lines end in `\n`, `\r\n`; events end with an empty line).
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    cur: Event,
    has_fields: bool,
}

impl Parser {
    /// Feeds a chunk; complete events are pushed onto `out` with `at`.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        at: Instant,
        out: &mut VecDeque<(Event, Instant)>,
    ) -> Result<()> {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let mut line = &self.buf[start..end];
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, at, out);
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            bail!("SSE line longer than {MAX_LINE} bytes");
        }
        Ok(())
    }

    fn line(&mut self, line: &str, at: Instant, out: &mut VecDeque<(Event, Instant)>) {
        if line.is_empty() {
            if self.has_fields {
                let mut ev = std::mem::take(&mut self.cur);
                if ev.data.ends_with('\n') {
                    ev.data.pop();
                }
                if ev.event.is_empty() {
                    ev.event = "message".into();
                }
                out.push_back((ev, at));
                self.has_fields = false;
            }
            return;
        }
        if line.starts_with(':') {
            return; // comment
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        self.has_fields = true;
        match field {
            "event" => self.cur.event = value.to_owned(),
            "id" => self.cur.id = value.to_owned(),
            "data" => {
                self.cur.data.push_str(value);
                self.cur.data.push('\n');
            }
            _ => {}
        }
    }
}

/// Reads events from a streaming response.
pub struct Reader {
    resp: reqwest::Response,
    parser: Parser,
    pending: VecDeque<(Event, Instant)>,
}

impl Reader {
    pub fn new(resp: reqwest::Response) -> Self {
        Reader {
            resp,
            parser: Parser::default(),
            pending: VecDeque::new(),
        }
    }

    /// The next event and when it arrived, or `None` when the stream ended.
    /// Cancel-safe: a dropped call loses no data.
    pub async fn next(&mut self) -> Result<Option<(Event, Instant)>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            match self.resp.chunk().await.context("reading the SSE stream")? {
                None => return Ok(None),
                Some(chunk) => {
                    let at = Instant::now();
                    self.parser.feed(&chunk, at, &mut self.pending)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_events() {
        let mut p = Parser::default();
        let mut out = VecDeque::new();
        let now = Instant::now();
        p.feed(
            b"event: open\ndata: {\"event\":\"open\"}\n\n: c\nevent: mess",
            now,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0.event, "open");
        p.feed(
            b"age\r\nid: 01AB\r\ndata: a\ndata: b\n\ndata:x\n\n",
            now,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[1].0,
            Event {
                event: "message".into(),
                id: "01AB".into(),
                data: "a\nb".into()
            }
        );
        assert_eq!(out[2].0.data, "x");
        assert_eq!(out[2].0.event, "message");
    }
}
