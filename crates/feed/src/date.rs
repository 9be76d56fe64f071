//! Feed dates to Unix seconds.
//!
//! Two families cover nearly every feed: RFC 822/2822 (`Sat, 07 Sep 2002 00:00:01 GMT`) with
//! its broken variants (no weekday, a full month name, a two-digit year, no seconds, no time,
//! `+00:00` offsets, named US zones, a trailing comment, asctime order), and ISO 8601 as used
//! by RFC 3339 and W3C-DTF (`2003-12-31T10:14:55Z`, `2003-12-31`, `2003-12`, `2003`,
//! `20031231T101455`, a space instead of `T`, an ordinal `2003-365`). A date without a zone is
//! taken as UTC. Anything else yields `None`.

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

#[derive(Default)]
struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    offset: i64,
}

impl Parts {
    fn to_unix(&self) -> Option<i64> {
        if !(1..=9999).contains(&self.year)
            || !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 24
            || self.minute > 59
            || self.second > 61
            || (self.hour == 24 && (self.minute > 0 || self.second > 0))
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second.min(59));
        Some(days * 86_400 + secs - self.offset)
    }
}

/// Parse a feed date; `None` when it is not one.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 128 {
        return None;
    }
    parse_iso(s).or_else(|| parse_rfc822(s))
}

fn digits(s: &str, n: usize) -> Option<u32> {
    let d = s.get(..n)?;
    if d.bytes().all(|b| b.is_ascii_digit()) {
        d.parse().ok()
    } else {
        None
    }
}

/// `Z`, `+hh:mm`, `+hhmm`, `+hh`, or empty (UTC): the offset east of UTC in seconds.
fn parse_offset(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    if let Some(z) = named_zone(s) {
        return Some(z);
    }
    let (sign, rest) = match s.as_bytes()[0] {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = match rest.len() {
        1 | 2 => (rest.parse::<i64>().ok()?, 0),
        4 => (i64::from(digits(rest, 2)?), i64::from(digits(&rest[2..], 2)?)),
        5 if rest.as_bytes()[2] == b':' => (i64::from(digits(rest, 2)?), i64::from(digits(&rest[3..], 2)?)),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit() || b == b':') || h > 23 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 4 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut p = Parts {
        year: i64::from(digits(s, 4)?),
        month: 1,
        day: 1,
        ..Parts::default()
    };
    let mut rest = &s[4..];
    if let Some(r) = rest.strip_prefix('-') {
        // YYYY-MM[-DD] or YYYY-DDD.
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        match n {
            2 => {
                p.month = digits(r, 2)?;
                rest = &r[2..];
                if let Some(r2) = rest.strip_prefix('-') {
                    p.day = digits(r2, 2)?;
                    rest = &r2[2..];
                }
            }
            3 => {
                let ordinal = digits(r, 3)?;
                let mut remaining = ordinal;
                p.month = 1;
                while p.month <= 12 && remaining > days_in_month(p.year, p.month) {
                    remaining -= days_in_month(p.year, p.month);
                    p.month += 1;
                }
                if ordinal == 0 || p.month > 12 {
                    return None;
                }
                p.day = remaining;
                rest = &r[3..];
            }
            _ => return None,
        }
    } else if rest.len() >= 4 && rest.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
        p.month = digits(rest, 2)?;
        p.day = digits(&rest[2..], 2)?;
        rest = &rest[4..];
    } else if !rest.is_empty() {
        return None;
    }
    if rest.is_empty() {
        return p.to_unix();
    }
    let time = match rest.as_bytes()[0] {
        b'T' | b't' | b' ' => rest[1..].trim_start(),
        _ => return None,
    };
    if time.is_empty() {
        return p.to_unix();
    }
    p.hour = digits(time, 2)?;
    let mut t = &time[2..];
    let colon = t.starts_with(':');
    if colon {
        t = &t[1..];
    }
    p.minute = digits(t, 2)?;
    t = &t[2..];
    if colon {
        if let Some(r) = t.strip_prefix(':') {
            p.second = digits(r, 2)?;
            t = &r[2..];
        }
    } else if t.len() >= 2 && t.as_bytes()[..2].iter().all(u8::is_ascii_digit) {
        p.second = digits(t, 2)?;
        t = &t[2..];
    }
    if let Some(r) = t.strip_prefix(['.', ',']) {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        t = &r[n..];
    }
    p.offset = parse_offset(t)?;
    p.to_unix()
}

fn month_number(word: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let w = word.to_ascii_lowercase();
    let w = w.trim_end_matches('.');
    if w.len() < 3 {
        return None;
    }
    let full = [
        "january", "february", "march", "april", "may", "june", "july", "august", "september",
        "october", "november", "december",
    ];
    MONTHS
        .iter()
        .position(|m| w == *m || (full.iter().any(|f| f.starts_with(w)) && w.starts_with(m)))
        .map(|i| i as u32 + 1)
        .or_else(|| (w == "sept").then_some(9))
}

fn is_weekday(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    let w = w.trim_end_matches(['.', ',']);
    const DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    w.len() >= 2 && DAYS.iter().any(|d| d.starts_with(w))
}

fn named_zone(z: &str) -> Option<i64> {
    let z = z.to_ascii_uppercase();
    let hours = match z.as_str() {
        "UT" | "UTC" | "GMT" | "Z" | "WET" => 0,
        "EST" => -5,
        "EDT" => -4,
        "CST" => -6,
        "CDT" => -5,
        "MST" => -7,
        "MDT" => -6,
        "PST" => -8,
        "PDT" => -7,
        "AST" => -4,
        "ADT" => -3,
        "AKST" => -9,
        "AKDT" => -8,
        "HST" => -10,
        "BST" | "CET" | "WEST" => 1,
        "CEST" | "EET" => 2,
        "EEST" | "MSK" => 3,
        "IST" => return Some(5 * 3600 + 1800),
        "JST" | "KST" => 9,
        "AEST" => 10,
        "AEDT" => 11,
        "NZST" => 12,
        "NZDT" => 13,
        // Military zones other than Z are too often misused to trust.
        s if s.len() == 1 && s.as_bytes()[0].is_ascii_alphabetic() && s != "J" => 0,
        _ => return None,
    };
    Some(hours * 3600)
}

/// `GMT+2`, `UTC-05:00`.
fn prefixed_offset(tok: &str) -> Option<i64> {
    let upper = tok.to_ascii_uppercase();
    let rest = upper.strip_prefix("GMT").or_else(|| upper.strip_prefix("UTC"))?;
    if rest.is_empty() {
        return None;
    }
    parse_offset(rest)
}

fn parse_rfc822(s: &str) -> Option<i64> {
    // Drop a trailing comment such as "(UTC)" and normalize separators.
    let s = match s.find('(') {
        Some(i) => &s[..i],
        None => s,
    };
    let cleaned: String = s
        .chars()
        .map(|c| if c == ',' { ' ' } else { c })
        .collect();
    let mut tokens: Vec<String> = Vec::new();
    for tok in cleaned.split_whitespace() {
        // "29-Sep-2002" and "Sep/29/2002" style dates.
        if tok.contains(['-', '/'])
            && !tok.starts_with(['+', '-'])
            && tok.chars().any(|c| c.is_ascii_alphabetic())
        {
            tokens.extend(tok.split(['-', '/']).filter(|t| !t.is_empty()).map(str::to_string));
        } else {
            tokens.push(tok.to_string());
        }
    }
    let mut p = Parts::default();
    let mut numbers: Vec<&str> = Vec::new();
    let mut have_time = false;
    let mut have_zone = false;
    let mut i = 0;
    while i < tokens.len() {
        let tok = tokens[i].as_str();
        i += 1;
        if tok.contains(':') && tok.as_bytes()[0].is_ascii_digit() && !have_time {
            // hh:mm[:ss][+zone]
            let (time, zone) = match tok.find(['+', '-']) {
                Some(z) => (&tok[..z], Some(&tok[z..])),
                None => (tok, None),
            };
            let mut f = time.split(':');
            p.hour = f.next()?.parse().ok()?;
            p.minute = f.next()?.parse().ok()?;
            if let Some(sec) = f.next() {
                let sec = sec.split('.').next().unwrap_or("0");
                p.second = sec.parse().ok()?;
            }
            if let Some(z) = zone {
                p.offset = parse_offset(z)?;
                have_zone = true;
            }
            have_time = true;
        } else if let Some(m) = month_number(tok).filter(|_| p.month == 0) {
            p.month = m;
        } else if is_weekday(tok) {
        } else if tok.bytes().all(|b| b.is_ascii_digit()) && !tok.is_empty() {
            numbers.push(tok);
        } else if !have_zone && (tok.starts_with(['+', '-']) || named_zone(tok).is_some()) {
            p.offset = parse_offset(tok)?;
            have_zone = true;
        } else if !have_zone && let Some(off) = prefixed_offset(tok) {
            p.offset = off;
            have_zone = true;
        } else if tok.eq_ignore_ascii_case("at") || tok.eq_ignore_ascii_case("on") {
        } else {
            return None;
        }
    }
    if p.month == 0 {
        return None;
    }
    let (day, year) = match numbers.as_slice() {
        [a, b] if a.len() <= 2 && b.len() == 4 => (*a, *b),
        [a, b] if a.len() == 4 && b.len() <= 2 => (*b, *a),
        [a, b] if a.len() <= 2 && b.len() <= 2 => (*a, *b),
        [a, b, t] if t.len() == 4 && !have_time => {
            // "Jan 4 2004 1604": a bare hhmm after the year is rare; refuse.
            let _ = (a, b);
            return None;
        }
        _ => return None,
    };
    p.day = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    p.year = match (year.len(), y) {
        (4, y) => y,
        (_, y) if y < 50 => 2000 + y,
        (_, y) if y < 100 => 1900 + y,
        _ => return None,
    };
    p.to_unix()
}

#[cfg(test)]
mod tests {
    use super::parse_date;

    const T: i64 = 1_031_356_801; // 2002-09-07T00:00:01Z

    #[test]
    fn rfc822_and_variants() {
        for s in [
            "Sat, 07 Sep 2002 00:00:01 GMT",
            "Sat, 07 Sep 2002 00:00:01 +0000",
            "Sat, 7 Sep 2002 00:00:01 UT",
            "07 Sep 2002 00:00:01 Z",
            "Saturday, 07 September 2002 00:00:01 GMT",
            "sat, 07 sep 02 00:00:01 gmt",
            "Sat, 07 Sep 2002 00:00:01 +00:00",
            "Fri, 06 Sep 2002 20:00:01 EDT",
            "Fri, 06 Sep 2002 17:00:01 -0700",
            "Sat, 07 Sep 2002 00:00:01 GMT (Coordinated Universal Time)",
            "Sat 07-Sep-2002 00:00:01 GMT",
            "Sat Sep  7 00:00:01 2002",
            "Sat, 07 Sep 2002 00:00:01",
            "Sat,07 Sep 2002 00:00:01 GMT",
        ] {
            assert_eq!(parse_date(s), Some(T), "{s}");
        }
        assert_eq!(parse_date("Sat, 07 Sep 2002 00:01 GMT"), Some(T - 1 + 60));
        assert_eq!(parse_date("07 Sep 2002"), Some(T - 1));
        assert_eq!(parse_date("Sat, 07 Sep 2002 00:00:01 GMT+2"), Some(T - 7200));
    }

    #[test]
    fn iso8601_and_w3cdtf() {
        for s in [
            "2002-09-07T00:00:01Z",
            "2002-09-07T00:00:01+00:00",
            "2002-09-07T02:00:01+02:00",
            "2002-09-06T19:00:01-05:00",
            "2002-09-07T00:00:01.123Z",
            "2002-09-07 00:00:01",
            "20020907T000001Z",
            "2002-09-07T00:00:01+0000",
            "2002-09-07t00:00:01z",
        ] {
            assert_eq!(parse_date(s), Some(T), "{s}");
        }
        assert_eq!(parse_date("2002-09-07"), Some(T - 1));
        assert_eq!(parse_date("2002-09"), parse_date("2002-09-01"));
        assert_eq!(parse_date("2002"), parse_date("2002-01-01"));
        assert_eq!(parse_date("2002-250"), Some(T - 1));
        assert_eq!(parse_date("2002-09-07T00:00Z"), Some(T - 1));
    }

    #[test]
    fn rejects_nonsense() {
        for s in ["", "yesterday", "2002-13-01", "2002-02-30", "Sat, 32 Sep 2002", "99999", "Τρί, 29 Ιούν 2004 12:53:00 GMT"] {
            assert_eq!(parse_date(s), None, "{s}");
        }
    }
}
