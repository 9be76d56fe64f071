//! What the scenarios read from the machine and the server's files: a process's CPU time
//! (`/proc/<pid>/stat`), the server's pid (`server.json` in its data dir), read-only SQL
//! on its database (the `sqlite3` command), and a clock that converts this process's
//! monotonic instants to the Unix milliseconds the server stamps its rows with.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// CPU seconds (user + system) process `pid` has used so far, from `/proc/<pid>/stat`.
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the server running?)"))?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat: {stat}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let tick = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat: {stat}"))
    };
    Ok((tick(11)? + tick(12)?) / clk_tck())
}

/// CPU seconds of each of `pid`'s threads so far, summed by thread name (`comm`, at most
/// 15 characters: tokio's workers are all `tokio-runtime-w`), from
/// `/proc/<pid>/task/*/stat`. Threads that ended are not counted.
pub fn thread_cpu_seconds(pid: u32) -> Result<std::collections::BTreeMap<String, f64>> {
    let mut out = std::collections::BTreeMap::new();
    let dir = format!("/proc/{pid}/task");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        *out.entry(name).or_insert(0.0) += (tick(11) + tick(12)) / clk_tck();
    }
    Ok(out)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// The server's pid from `<data dir>/server.json`.
pub fn server_pid(data_dir: &Path) -> Result<u32> {
    let path = data_dir.join("server.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    v["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| anyhow!("{} has no pid", path.display()))
}

/// Runs one read-only query with the `sqlite3` command; rows of fields (separated by the
/// unit separator, so text with `|` is safe). Retries a busy database a few times.
pub async fn sqlite_rows(db: &Path, sql: &str) -> Result<Vec<Vec<String>>> {
    let mut last = String::new();
    for attempt in 0..20u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        }
        let out = tokio::process::Command::new("sqlite3")
            .arg("-readonly")
            .arg("-batch")
            .args(["-cmd", ".timeout 5000"])
            .args(["-separator", "\x1f"])
            .arg(db)
            .arg(sql)
            .output()
            .await
            .context(
                "cannot run sqlite3 (the feeds and smtp scenarios read the database with it)",
            )?;
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            return Ok(text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| l.split('\x1f').map(str::to_owned).collect())
                .collect());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !(last.contains("locked") || last.contains("busy")) {
            break;
        }
    }
    bail!("sqlite3 {} failed: {last}", db.display())
}

/// Converts instants of this process to Unix milliseconds from one reading of the wall
/// clock, so a run's figures do not move if the wall clock is stepped meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_unix_ms: f64,
}

impl Clock {
    pub fn new() -> Clock {
        let base = Instant::now();
        let base_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        Clock { base, base_unix_ms }
    }

    /// Unix milliseconds of `t`.
    pub fn unix_ms(&self, t: Instant) -> f64 {
        if t >= self.base {
            self.base_unix_ms + t.duration_since(self.base).as_secs_f64() * 1000.0
        } else {
            self.base_unix_ms - self.base.duration_since(t).as_secs_f64() * 1000.0
        }
    }
}

/// Process CPU use between two readings, as percent of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    pub at: Instant,
    pub cpu_s: f64,
}

impl CpuMark {
    pub fn take(pid: u32) -> Result<CpuMark> {
        Ok(CpuMark {
            at: Instant::now(),
            cpu_s: process_cpu_seconds(pid)?,
        })
    }

    /// Percent of one core used from `self` to `later`.
    pub fn pct_until(&self, later: &CpuMark) -> f64 {
        let wall = later.at.saturating_duration_since(self.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        100.0 * (later.cpu_s - self.cpu_s) / wall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu() {
        let pid = std::process::id();
        let a = process_cpu_seconds(pid).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i * i));
        }
        let b = process_cpu_seconds(pid).unwrap();
        assert!(b >= a, "{a} then {b}");
        let threads = thread_cpu_seconds(pid).unwrap();
        assert!(!threads.is_empty());
        assert!(
            threads.values().sum::<f64>() <= b + 0.05,
            "{threads:?} vs {b}"
        );
    }

    #[test]
    fn clock_round_trip() {
        let c = Clock::new();
        let t = Instant::now() + Duration::from_millis(1500);
        let ms = c.unix_ms(t) - c.unix_ms(c.base);
        assert!((ms - 1500.0).abs() < 1.0, "{ms}");
    }
}
