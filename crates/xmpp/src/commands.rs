//! Commands a user types to tidings over IM (`help`, `list`, `sub URL words...`, `pause 2h`,
//! ...). Parsing only: I/O-free and total (every text is some [`Command`]; what is not
//! understood, or is out of bounds, is [`Command::Unknown`] so the caller can answer with
//! [`help_text`]). Carrying a command out is the routing side's job.

use std::time::Duration;

/// The longest URL `sub` accepts (bytes).
pub const MAX_URL: usize = 2048;
/// At most this many keywords after the URL of `sub`...
pub const MAX_KEYWORDS: usize = 20;
/// ...of at most this many characters each.
pub const MAX_KEYWORD_CHARS: usize = 64;
/// The highest item number (`unsub N`, `ack N`, `reply N`).
pub const MAX_INDEX: usize = 10_000;
/// `history N` shows at most this many items.
pub const MAX_HISTORY: usize = 100;
/// The longest reply text (characters).
pub const MAX_REPLY_CHARS: usize = 4096;
/// The longest pause (30 days).
pub const MAX_PAUSE: Duration = Duration::from_secs(30 * 86_400);
/// [`Command::Unknown`] keeps at most this many characters of what was typed.
pub const MAX_UNKNOWN_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help` or `?`.
    Help,
    /// `list`: the user's subscriptions, numbered.
    List,
    /// `sub URL [keyword...]`: subscribe to a feed, page or topic, optionally filtered.
    Sub { url: String, keywords: Vec<String> },
    /// `unsub N`: drop subscription number N of `list` (1-based).
    Unsub(usize),
    /// `pause [DURATION]`: hold IM delivery, for a while (`30m`, `2h`, `1d`, `1h30m`) or
    /// until `resume`.
    Pause(Option<Duration>),
    /// `resume`: end a pause.
    Resume,
    /// `ack [N]`: acknowledge the latest item, or item N of the recent ones.
    Ack(Option<usize>),
    /// `history [N]`: the last N items (default chosen by the caller).
    History(Option<usize>),
    /// `reply N TEXT`: answer item N (goes back to its source where the source can take it).
    Reply { n: usize, text: String },
    /// Anything else, as typed (trimmed, shortened to [`MAX_UNKNOWN_CHARS`]).
    Unknown(String),
}

/// Parses one IM message as a command. Verbs are case-insensitive and may start with `/`.
pub fn parse(text: &str) -> Command {
    let text = text.trim();
    let unknown = || Command::Unknown(text.chars().take(MAX_UNKNOWN_CHARS).collect());
    let (verb, rest) = match text.split_once(char::is_whitespace) {
        Some((verb, rest)) => (verb, rest.trim()),
        None => (text, ""),
    };
    let verb = verb.strip_prefix('/').unwrap_or(verb).to_lowercase();
    let parsed = match verb.as_str() {
        "help" | "?" | "h" if rest.is_empty() => Some(Command::Help),
        "list" | "ls" if rest.is_empty() => Some(Command::List),
        "resume" | "unpause" if rest.is_empty() => Some(Command::Resume),
        "sub" | "subscribe" => parse_sub(rest),
        "unsub" | "unsubscribe" => index(rest).map(Command::Unsub),
        "pause" if rest.is_empty() => Some(Command::Pause(None)),
        "pause" => parse_duration(rest).map(|d| Command::Pause(Some(d))),
        "ack" if rest.is_empty() => Some(Command::Ack(None)),
        "ack" => index(rest).map(|n| Command::Ack(Some(n))),
        "history" | "hist" if rest.is_empty() => Some(Command::History(None)),
        "history" | "hist" => number(rest, MAX_HISTORY).map(|n| Command::History(Some(n))),
        "reply" | "re" => parse_reply(rest),
        _ => None,
    };
    parsed.unwrap_or_else(unknown)
}

fn parse_sub(rest: &str) -> Option<Command> {
    let mut words = rest.split_whitespace();
    let url = words.next()?;
    if url.len() > MAX_URL {
        return None;
    }
    let keywords: Vec<String> = words.map(str::to_owned).collect();
    if keywords.len() > MAX_KEYWORDS
        || keywords
            .iter()
            .any(|k| k.chars().count() > MAX_KEYWORD_CHARS)
    {
        return None;
    }
    Some(Command::Sub {
        url: url.to_owned(),
        keywords,
    })
}

fn parse_reply(rest: &str) -> Option<Command> {
    let (n, text) = rest.split_once(char::is_whitespace)?;
    let n = index(n)?;
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_REPLY_CHARS {
        return None;
    }
    Some(Command::Reply {
        n,
        text: text.to_owned(),
    })
}

/// An item number: 1..=[`MAX_INDEX`], a leading `#` allowed.
fn index(text: &str) -> Option<usize> {
    number(text.strip_prefix('#').unwrap_or(text), MAX_INDEX)
}

fn number(text: &str, max: usize) -> Option<usize> {
    // Digits only (no sign, no spaces), and short enough that parsing cannot overflow.
    if text.is_empty() || text.len() > 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = text.parse().ok()?;
    (1..=max).contains(&n).then_some(n)
}

/// `90s`, `30m`, `2h`, `1d`, `1w`, or a sum such as `1h30m`; a bare number is minutes.
/// Between 1 s and [`MAX_PAUSE`].
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim().to_ascii_lowercase();
    if text.is_empty() || text.len() > 32 {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let minutes: u64 = text.parse().ok()?;
        return bounded(minutes.checked_mul(60)?);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        if digits.is_empty() {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return None;
    }
    bounded(total)
}

fn bounded(secs: u64) -> Option<Duration> {
    let d = Duration::from_secs(secs);
    (secs > 0 && d <= MAX_PAUSE).then_some(d)
}

/// What `help` answers (XEP-0393 styling: `*bold*`, `` `code` ``).
pub fn help_text() -> &'static str {
    "*tidings commands*\n\
     `list` – your subscriptions, numbered\n\
     `sub URL [words...]` – subscribe to a feed, page or topic (only items with one of the words)\n\
     `unsub N` – drop subscription N\n\
     `pause [30m|2h|1d]` – hold messages here (for a while, or until `resume`)\n\
     `resume` – deliver again, held items first\n\
     `ack [N]` – acknowledge the latest item (or item N)\n\
     `history [N]` – the last N items\n\
     `reply N text` – answer item N\n\
     `help` – this text"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(s: &str) -> Command {
        Command::Unknown(s.to_owned())
    }

    #[test]
    fn simple_verbs_any_case() {
        assert_eq!(parse("help"), Command::Help);
        assert_eq!(parse("  HELP \n"), Command::Help);
        assert_eq!(parse("?"), Command::Help);
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(parse("List"), Command::List);
        assert_eq!(parse("RESUME"), Command::Resume);
        assert_eq!(parse("ack"), Command::Ack(None));
        assert_eq!(parse("history"), Command::History(None));
    }

    #[test]
    fn arguments_where_none_are_taken_are_not_commands() {
        assert_eq!(parse("help me"), unknown("help me"));
        assert_eq!(parse("list all"), unknown("list all"));
    }

    #[test]
    fn sub_with_and_without_keywords() {
        assert_eq!(
            parse("sub https://example.org/feed.xml"),
            Command::Sub {
                url: "https://example.org/feed.xml".into(),
                keywords: vec![]
            }
        );
        assert_eq!(
            parse("Sub  https://example.org/feed   rust  tokio"),
            Command::Sub {
                url: "https://example.org/feed".into(),
                keywords: vec!["rust".into(), "tokio".into()]
            }
        );
        assert_eq!(parse("sub"), unknown("sub"));
        let long = format!("sub https://e.org/{}", "a".repeat(MAX_URL));
        assert!(matches!(parse(&long), Command::Unknown(_)));
        let many = format!("sub https://e.org {}", "k ".repeat(MAX_KEYWORDS + 1));
        assert!(matches!(parse(&many), Command::Unknown(_)));
        let wide = format!("sub https://e.org {}", "k".repeat(MAX_KEYWORD_CHARS + 1));
        assert!(matches!(parse(&wide), Command::Unknown(_)));
    }

    #[test]
    fn numbers_are_bounded() {
        assert_eq!(parse("unsub 3"), Command::Unsub(3));
        assert_eq!(parse("unsub #3"), Command::Unsub(3));
        assert_eq!(parse("unsub 0"), unknown("unsub 0"));
        assert_eq!(parse("unsub -1"), unknown("unsub -1"));
        assert_eq!(parse("unsub 10001"), unknown("unsub 10001"));
        assert_eq!(
            parse("unsub 99999999999999999999999"),
            unknown("unsub 99999999999999999999999")
        );
        assert_eq!(parse("unsub x"), unknown("unsub x"));
        assert_eq!(parse("ack 2"), Command::Ack(Some(2)));
        assert_eq!(parse("history 20"), Command::History(Some(20)));
        assert_eq!(parse("history 101"), unknown("history 101"));
    }

    #[test]
    fn pause_durations() {
        assert_eq!(parse("pause"), Command::Pause(None));
        assert_eq!(
            parse("pause 2h"),
            Command::Pause(Some(Duration::from_secs(7200)))
        );
        assert_eq!(
            parse("PAUSE 30M"),
            Command::Pause(Some(Duration::from_secs(1800)))
        );
        assert_eq!(
            parse("pause 1d"),
            Command::Pause(Some(Duration::from_secs(86_400)))
        );
        assert_eq!(
            parse("pause 1h30m"),
            Command::Pause(Some(Duration::from_secs(5400)))
        );
        assert_eq!(
            parse("pause 45"),
            Command::Pause(Some(Duration::from_secs(2700)))
        );
        assert_eq!(parse("pause 0m"), unknown("pause 0m"));
        assert_eq!(parse("pause 31d"), unknown("pause 31d"));
        assert_eq!(parse("pause h"), unknown("pause h"));
        assert_eq!(parse("pause 2x"), unknown("pause 2x"));
        assert_eq!(parse("pause 2h5"), unknown("pause 2h5"));
        assert_eq!(
            parse("pause 99999999999999999999d"),
            unknown("pause 99999999999999999999d")
        );
    }

    #[test]
    fn reply_keeps_the_text() {
        assert_eq!(
            parse("reply 2 Yes, on it.\nThanks"),
            Command::Reply {
                n: 2,
                text: "Yes, on it.\nThanks".into()
            }
        );
        assert_eq!(parse("reply 2"), unknown("reply 2"));
        assert_eq!(parse("reply two words"), unknown("reply two words"));
        let long = format!("reply 1 {}", "x".repeat(MAX_REPLY_CHARS + 1));
        assert!(matches!(parse(&long), Command::Unknown(_)));
    }

    #[test]
    fn unknown_text_is_kept_short() {
        assert_eq!(parse(""), unknown(""));
        assert_eq!(parse("hello there"), unknown("hello there"));
        let long = "x".repeat(1000);
        assert_eq!(
            parse(&long),
            Command::Unknown("x".repeat(MAX_UNKNOWN_CHARS))
        );
    }

    #[test]
    fn help_mentions_every_verb() {
        for verb in [
            "list", "sub", "unsub", "pause", "resume", "ack", "history", "reply", "help",
        ] {
            assert!(help_text().contains(verb), "{verb}");
        }
    }
}
