//! Human-readable durations for the configuration: `"500ms"`, `"10s"`, `"5m"`, `"1h30m"`.
//!
//! A duration is one or more `<integer><unit>` parts with the units `ms`, `s`, `m` and `h`,
//! written without spaces; the parts are added up. A bare number is refused on purpose: in a
//! config file `timeout = 10` is ambiguous (seconds? milliseconds?) and a unit costs nothing.
//!
//! [`serde`] is the `#[serde(with = "crate::duration::serde")]` adapter that lets config
//! structs hold a [`Duration`] while the file holds the string.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused. The message quotes the input, so a caller that adds
/// the config key produces a complete error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (expected e.g. \"500ms\", \"10s\", \"5m\", \"1h30m\")"
)]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

/// Parses `"1h30m"`-style durations; see the module docs for the grammar.
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let err = |reason| ParseDurationError {
        input: input.to_owned(),
        reason,
    };
    if input.is_empty() {
        return Err(err("empty"));
    }
    let mut rest = input;
    // Milliseconds in u128 so that overflow is detected once, at the end, instead of at
    // every step; any realistic value is far below u64::MAX ms.
    let mut total_ms: u128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let (number, tail) = rest.split_at(digits);
        let number: u128 = number.parse().map_err(|_| err("number too large"))?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let factor: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(err("missing unit (ms, s, m or h)")),
            _ => return Err(err("unknown unit (use ms, s, m or h)")),
        };
        total_ms = number
            .checked_mul(factor)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| err("too large"))?;
        rest = tail;
    }
    let ms = u64::try_from(total_ms).map_err(|_| err("too large"))?;
    Ok(Duration::from_millis(ms))
}

/// Writes a duration in the same syntax [`parse`] reads, largest units first
/// (`90s` → `"1m30s"`, zero → `"0s"`). Sub-millisecond parts are dropped: the syntax cannot
/// express them and no config value needs them.
pub fn format(d: Duration) -> String {
    Display(d).to_string()
}

/// [`format`] as a `Display` value, to avoid an allocation inside `write!`.
struct Display(Duration);

impl fmt::Display for Display {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            let n = ms / size;
            if n > 0 {
                write!(f, "{n}{unit}")?;
                ms %= size;
            }
        }
        Ok(())
    }
}

/// Serde adapter: `#[serde(with = "crate::duration::serde")]` on a `Duration` field.
pub mod serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::Display(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        // Owned String rather than &str: TOML values handed over from a `toml::Table` are
        // not borrowable from the input.
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1m30s250ms"), Ok(Duration::from_millis(90_250)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_bad_input_and_quotes_it() {
        for bad in [
            "", "10", "ms", "5x", "5 s", " 5s", "5s ", "-5s", "1.5s", "5sec", "5S", "h1",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(parse("99999999999999999999999999h").is_err());
        assert!(parse(&format!("{}h", u64::MAX)).is_err());
    }

    #[test]
    fn formats_round_trip() {
        for (d, s) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_millis(90_250), "1m30s250ms"),
            (Duration::from_secs(5400), "1h30m"),
        ] {
            assert_eq!(format(d), s);
            assert_eq!(parse(s), Ok(d));
        }
        assert_eq!(format(Duration::from_nanos(1_500_000)), "1ms");
    }
}
