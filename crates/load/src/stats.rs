//! Latency summaries (exact percentiles over all samples) and error tallies.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// Nearest-rank percentile of sorted samples.
fn rank(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The epsilon keeps float error (0.999 * 1000 = 999.0000000000001) from skipping a rank.
    let idx = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}

impl Summary {
    /// Summarizes latencies given in microseconds.
    pub fn of(mut us: Vec<u64>) -> Summary {
        if us.is_empty() {
            return Summary::default();
        }
        us.sort_unstable();
        let sum: u128 = us.iter().map(|&v| u128::from(v)).sum();
        Summary {
            count: us.len(),
            p50: rank(&us, 50.0),
            p90: rank(&us, 90.0),
            p99: rank(&us, 99.0),
            p999: rank(&us, 99.9),
            max: us[us.len() - 1],
            mean: sum as f64 / us.len() as f64,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": ms(self.p50),
            "p90_ms": ms(self.p90),
            "p99_ms": ms(self.p99),
            "p999_ms": ms(self.p999),
            "max_ms": ms(self.max),
            "mean_ms": round3(self.mean / 1000.0),
        })
    }

    /// One line for people: `p50 1.23 ms  p90 ...`.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (mean {:.3} ms, n={})",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.mean / 1000.0,
            self.count
        )
    }
}

/// Microseconds to milliseconds, rounded to 3 decimals.
pub fn ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A duration in whole microseconds (saturating).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Counts of errors by kind (an HTTP status like "503", or "io:timeout" and the like).
#[derive(Debug, Default, Clone)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, kind: impl Into<String>) {
        *self.0.entry(kind.into()).or_insert(0) += 1;
    }
    pub fn merge(&mut self, other: &Errors) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
    pub fn json(&self) -> Value {
        json!(self.0)
    }
    pub fn line(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = Summary::of((1..=1000).collect());
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, 500);
        assert_eq!(s.p90, 900);
        assert_eq!(s.p99, 990);
        assert_eq!(s.p999, 999);
        assert_eq!(s.max, 1000);
        assert_eq!(Summary::of(vec![7]).p99, 7);
        assert_eq!(Summary::of(vec![]).count, 0);
    }

    #[test]
    fn errors() {
        let mut e = Errors::default();
        e.add("500");
        e.add("500");
        e.add("io:timeout");
        assert_eq!(e.total(), 3);
        assert_eq!(e.line(), "500: 2, io:timeout: 1");
    }
}
