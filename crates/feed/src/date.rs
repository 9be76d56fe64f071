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
            || self.second > 60
            || (self.hour == 24 && (self.minute > 0 || self.second > 0))
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second.min(59));
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
        4 => (
            i64::from(digits(rest, 2)?),
            i64::from(digits(&rest[2..], 2)?),
        ),
        5 if rest.as_bytes()[2] == b':' => (
            i64::from(digits(rest, 2)?),
            i64::from(digits(&rest[3..], 2)?),
        ),
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
            3 if r[3..].starts_with('-') && r.starts_with('0') => {
                // "2003-012-31": a month with an extra zero (seen from Google).
                p.month = digits(r, 3)?;
                let r2 = &r[4..];
                p.day = digits(r2, 2)?;
                rest = &r2[2..];
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
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let w = word.to_ascii_lowercase();
    let w = w.trim_end_matches('.');
    if w.len() < 3 {
        return None;
    }
    let full = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
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
    const DAYS: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    w.len() >= 2 && DAYS.iter().any(|d| d.starts_with(w))
}

fn named_zone(z: &str) -> Option<i64> {
    let z = z.to_ascii_uppercase();
    let hours = match z.as_str() {
        "UT" | "UTC" | "GMT" | "Z" | "WET" | "ETC/GMT" | "ETC/UTC" => 0,
        // Broken-but-common abbreviations without the S/D.
        "AT" => -4,
        "ET" => -5,
        "CT" => -6,
        "MT" => -7,
        "PT" => -8,
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
        "BST" | "CET" | "MET" | "WEST" => 1,
        "CEST" | "MEST" | "EET" => 2,
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

/// `2006/09/15` or `2006-09-15` inside an otherwise RFC 822 date: (year, month, day).
fn numeric_date(tok: &str) -> Option<(String, u32, String)> {
    let parts: Vec<&str> = tok.split(['/', '-']).collect();
    match parts.as_slice() {
        [y, m, d]
            if y.len() == 4
                && (1..=2).contains(&m.len())
                && (1..=2).contains(&d.len())
                && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            Some((y.to_string(), m.parse().ok()?, d.to_string()))
        }
        _ => None,
    }
}

/// `GMT+2`, `UTC-05:00`.
fn prefixed_offset(tok: &str) -> Option<i64> {
    let upper = tok.to_ascii_uppercase();
    let rest = upper
        .strip_prefix("GMT")
        .or_else(|| upper.strip_prefix("UTC"))?;
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
    let cleaned: String = s.chars().map(|c| if c == ',' { ' ' } else { c }).collect();
    let mut tokens: Vec<String> = Vec::new();
    for tok in cleaned.split_whitespace() {
        // "29-Sep-2002" and "Sep/29/2002" style dates.
        if tok.contains(['-', '/'])
            && !tok.starts_with(['+', '-'])
            && tok
                .split(['-', '/'])
                .any(|part| month_number(part).is_some())
        {
            tokens.extend(
                tok.split(['-', '/'])
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            );
        } else {
            tokens.push(tok.to_string());
        }
    }
    let mut p = Parts::default();
    let mut numbers: Vec<String> = Vec::new();
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
            let fields: Vec<&str> = time.split(':').collect();
            if !(2..=3).contains(&fields.len()) {
                return None;
            }
            p.hour = fields[0].parse().ok()?;
            p.minute = fields[1].parse().ok()?;
            if let Some(sec) = fields.get(2) {
                let sec = sec.split('.').next().unwrap_or("0");
                p.second = sec.parse().ok()?;
            }
            if let Some(z) = zone {
                p.offset = parse_offset(z)?;
                have_zone = true;
            }
            have_time = true;
        } else if let Some((y, m, d)) = numeric_date(tok).filter(|_| p.month == 0) {
            // "2006/09/15" (Perforce and friends).
            p.month = m;
            numbers.push(d);
            numbers.push(y);
        } else if let Some(m) = month_number(tok).filter(|_| p.month == 0) {
            p.month = m;
        } else if tok.eq_ignore_ascii_case("am") || tok.eq_ignore_ascii_case("pm") {
            if !have_time || p.hour == 0 || p.hour > 12 {
                return None;
            }
            let pm = tok.eq_ignore_ascii_case("pm");
            p.hour = match (pm, p.hour) {
                (false, 12) => 0,
                (true, 12) => 12,
                (true, h) => h + 12,
                (false, h) => h,
            };
        } else if is_weekday(tok) {
        } else if tok.bytes().all(|b| b.is_ascii_digit()) && !tok.is_empty() {
            numbers.push(tok.to_string());
        } else if !have_zone && (tok.starts_with(['+', '-']) || named_zone(tok).is_some()) {
            p.offset = parse_offset(tok)?;
            have_zone = true;
        } else if !have_zone && let Some(off) = prefixed_offset(tok) {
            p.offset = off;
            have_zone = true;
        } else if tok.eq_ignore_ascii_case("at") || tok.eq_ignore_ascii_case("on") {
        } else if have_zone && (named_zone(tok).is_some() || prefixed_offset(tok).is_some()) {
            // "+0000 GMT": a second spelling of the same zone.
        } else {
            return None;
        }
    }
    if p.month == 0 {
        return None;
    }
    let (day, year) = match numbers.as_slice() {
        [a, b] if a.len() <= 2 && b.len() == 4 => (a, b),
        [a, b] if a.len() == 4 && b.len() <= 2 => (b, a),
        [a, b] if a.len() <= 2 && b.len() <= 2 => (a, b),
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
        assert_eq!(
            parse_date("Sat, 07 Sep 2002 00:00:01 GMT+2"),
            Some(T - 7200)
        );
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
    fn feedparser_variants() {
        let utc = |y, mo, d, h, mi, s| {
            super::Parts {
                year: y,
                month: mo,
                day: d,
                hour: h,
                minute: mi,
                second: s,
                offset: 0,
            }
            .to_unix()
        };
        for (s, want) in [
            ("Thu, 30 Apr 2015 08:57:00 MET", utc(2015, 4, 30, 7, 57, 0)),
            ("Thu, 30 Apr 2015 08:57:00 MEST", utc(2015, 4, 30, 6, 57, 0)),
            ("Thu, 01 Jan 04 19:48:21 GMT", utc(2004, 1, 1, 19, 48, 21)),
            ("Thu,  5 Apr 2012 10:00:00 GMT", utc(2012, 4, 5, 10, 0, 0)),
            (
                "Wed, 19 Aug 2009 18:28:00 Etc/GMT",
                utc(2009, 8, 19, 18, 28, 0),
            ),
            (
                "Wed, 19 Feb 2012 22:40:00 GMT-01:01",
                utc(2012, 2, 19, 23, 41, 0),
            ),
            (
                "Wed, 19 Feb 2012 22:40:00 -01:01",
                utc(2012, 2, 19, 23, 41, 0),
            ),
            ("Mon, 13 Feb, 2012 06:28:00 UTC", utc(2012, 2, 13, 6, 28, 0)),
            (
                "Mon, 26 January 2004 16:31:00 AT",
                utc(2004, 1, 26, 20, 31, 0),
            ),
            (
                "Mon, 26 January 2004 16:31:00 ET",
                utc(2004, 1, 26, 21, 31, 0),
            ),
            (
                "Mon, 26 January 2004 16:31:00 PT",
                utc(2004, 1, 27, 0, 31, 0),
            ),
            (
                "Thu Aug 30 2012 17:26:16 +0200",
                utc(2012, 8, 30, 15, 26, 16),
            ),
            ("Sun Jan  4 16:29:06 2004", utc(2004, 1, 4, 16, 29, 6)),
            ("Sun Jul 15 01:16:00 +0000 2012", utc(2012, 7, 15, 1, 16, 0)),
            ("Fri, 2006/09/15 08:19:53 EDT", utc(2006, 9, 15, 12, 19, 53)),
            (
                "Tue, 10 Jun 2003 04:00:00 +0000 GMT",
                utc(2003, 6, 10, 4, 0, 0),
            ),
            ("June 10, 2003 4:05 PM", utc(2003, 6, 10, 16, 5, 0)),
            ("2003-12-31T10:14:55-08:00", utc(2003, 12, 31, 18, 14, 55)),
            (
                "2007-04-23T23:25:47.538+10:00",
                utc(2007, 4, 23, 13, 25, 47),
            ),
            ("2004-02-28T18:14:55-08:00", utc(2004, 2, 29, 2, 14, 55)),
            ("2003-012-31T10:14:55+00:00", utc(2003, 12, 31, 10, 14, 55)),
            ("2004-07-08 23:56:58 -00:20", utc(2004, 7, 9, 0, 16, 58)),
            ("2004-07-08 23:56:58.0", utc(2004, 7, 8, 23, 56, 58)),
        ] {
            assert_eq!(parse_date(s), want, "{s}");
        }
        for s in [
            "Sun, 16 Dec 2012 1:2:3:4 GMT",
            "Sun, 16 zzz 2012 11:47:32 GMT",
            "Sun, Dec x 2012 11:47:32 GMT",
            "Sun, 16 Dec zz 11:47:32 GMT",
            "Sun, 16 Dec 2012 11:47:32 +zz:00",
            "Sun, 16 Dec 2012 11:47:32 +00:zz",
            "Sun, 99 Jun 2009 12:00:00 GMT",
            "Sun, 31 Dec 9999 23:59:59 -9999",
            "2003-12-31T25:14:55Z",
            "2003-12-31T10:61:55Z",
            "2003-12-31T10:14:61Z",
            "22013",
            "013",
            "2013-01-27-01",
            "2013-01-28T11:30:00-06:00Textra",
            "2013-xx-27",
            "2013-01-28T09:xx:00Z",
            "2013-01-28T09:00:00+00:xx",
        ] {
            assert_eq!(parse_date(s), None, "{s}");
        }
    }

    #[test]
    fn rejects_nonsense() {
        for s in [
            "",
            "yesterday",
            "2002-13-01",
            "2002-02-30",
            "Sat, 32 Sep 2002",
            "99999",
            "Τρί, 29 Ιούν 2004 12:53:00 GMT",
        ] {
            assert_eq!(parse_date(s), None, "{s}");
        }
    }
}
