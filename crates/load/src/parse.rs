//! `parse`: in-process parser throughput, on one thread (no server involved).
//!
//! - Feeds: every feed document of the feedparser corpus (`<corpus>/<category>/**.xml`,
//!   `.json`; the top-level README, LICENSE and expectations are not feeds) is loaded into
//!   memory and parsed with `tidings_feed::parse` once as a warm-up, then `--passes` times
//!   (bounded by `--max-time`). Documents the corpus says were served over HTTP get their
//!   `Content-Type` (from `expectations.jsonl`) and a URL, as in the conformance test.
//! - Mail: `--mail-messages` generated messages of each of three kinds, about
//!   `--mail-bytes` each (plain text; multipart/alternative with an HTML part;
//!   multipart/mixed with a small base64 attachment), parsed with
//!   `tidings_sources::mail::parse_mail` once as a warm-up, then `--mail-passes` times.
//!
//! Reports MB/s (10^6 bytes) and documents/s over the measured passes, the spread across
//! passes, per-document times, and where the feed time goes (by category, slowest files).

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::parse_duration;
use crate::stats::round3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The feedparser corpus (its `<category>/` folders hold the documents).
    #[arg(long, default_value = "../shared/corpus/feedparser")]
    corpus: PathBuf,
    /// Measured passes over the whole corpus (after one warm-up pass).
    #[arg(long, default_value_t = 100)]
    passes: u32,
    /// Measured passes over the generated mail (after one warm-up pass).
    #[arg(long, default_value_t = 50)]
    mail_passes: u32,
    /// Generated messages of each kind (plain, alternative, attachment).
    #[arg(long, default_value_t = 300)]
    mail_messages: usize,
    /// Size of each generated message in bytes (approximately: within 1 %).
    #[arg(long, default_value_t = 10 * 1024)]
    mail_bytes: usize,
    /// Stop the passes of each part after this long (the passes done so far count).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    max_time: Duration,
}

struct Doc {
    file: String,
    category: String,
    body: Vec<u8>,
    content_type: Option<String>,
    url: Option<String>,
}

/// HTTP headers the corpus pretends each document was served with, by file.
fn corpus_headers(dir: &Path) -> HashMap<String, Vec<(String, String)>> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read_to_string(dir.join("expectations.jsonl")) else {
        return out;
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let headers = v["http_headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|h| h.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        if let Some(f) = v["file"].as_str() {
            out.insert(f.to_string(), headers);
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if e.file_type()?.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn load_corpus(dir: &Path) -> Result<Vec<Doc>> {
    let headers = corpus_headers(dir);
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let mut docs = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        // Top-level files (README, LICENSE, expectations) are about the corpus.
        let Some((category, _)) = rel.split_once('/') else {
            continue;
        };
        if !(rel.ends_with(".xml") || rel.ends_with(".json")) {
            continue;
        }
        let body = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let h = headers.get(&rel).cloned().unwrap_or_default();
        let name = rel.rsplit('/').next().unwrap_or("");
        let served = name.starts_with("http_") || !h.is_empty();
        let content_type = served.then(|| {
            h.iter()
                .find(|(k, _)| k == "content-type")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "text/xml".into())
        });
        docs.push(Doc {
            category: category.to_string(),
            url: served.then(|| format!("http://127.0.0.1/feedparser/{rel}")),
            file: rel,
            body,
            content_type,
        });
    }
    if docs.is_empty() {
        bail!("no feed documents under {}", dir.display());
    }
    Ok(docs)
}

fn parse_feed(d: &Doc) -> usize {
    let parsed = tidings_feed::parse(tidings_feed::FeedInput {
        body: &d.body,
        content_type: d.content_type.as_deref(),
        url: d.url.as_deref(),
        ..Default::default()
    });
    black_box(&parsed);
    parsed.items.len() + usize::from(parsed.bozo) * 1_000_000
}

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
fn pct_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn per_doc_json(mut ns: Vec<u64>) -> Value {
    ns.sort_unstable();
    let mean = ns.iter().sum::<u64>() as f64 / ns.len().max(1) as f64 / 1000.0;
    json!({
        "p50_us": round3(pct_us(&ns, 50.0)),
        "p90_us": round3(pct_us(&ns, 90.0)),
        "p99_us": round3(pct_us(&ns, 99.0)),
        "max_us": round3(pct_us(&ns, 100.0)),
        "mean_us": round3(mean),
    })
}

/// Throughput over passes: (MB/s, docs/s) of the total, and MB/s of the slowest, median
/// and fastest pass.
struct Passes {
    times: Vec<Duration>,
    bytes: usize,
    docs: usize,
}

impl Passes {
    fn total(&self) -> Duration {
        self.times.iter().sum()
    }
    fn mb_s(&self) -> f64 {
        self.bytes as f64 * self.times.len() as f64 / 1e6 / self.total().as_secs_f64().max(1e-9)
    }
    fn docs_s(&self) -> f64 {
        self.docs as f64 * self.times.len() as f64 / self.total().as_secs_f64().max(1e-9)
    }
    fn spread(&self) -> (f64, f64, f64) {
        let mut v: Vec<f64> = self
            .times
            .iter()
            .map(|t| self.bytes as f64 / 1e6 / t.as_secs_f64().max(1e-9))
            .collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        (v[0], v[v.len() / 2], v[v.len() - 1])
    }
    fn json(&self) -> Value {
        let (lo, med, hi) = self.spread();
        json!({
            "passes": self.times.len(),
            "documents": self.docs,
            "bytes": self.bytes,
            "seconds": round3(self.total().as_secs_f64()),
            "mb_per_s": round3(self.mb_s()),
            "docs_per_s": round3(self.docs_s()),
            "pass_mb_per_s": {"min": round3(lo), "median": round3(med), "max": round3(hi)},
        })
    }
}

// ---- mail generation ----

const WORDS: &[&str] = &[
    "backup",
    "volume",
    "report",
    "server",
    "nightly",
    "completed",
    "files",
    "changed",
    "transfer",
    "rate",
    "snapshot",
    "retention",
    "policy",
    "warning",
    "disk",
    "usage",
    "certificate",
    "expires",
    "renewal",
    "invoice",
    "payment",
    "received",
    "order",
    "shipped",
    "tracking",
    "number",
    "meeting",
    "agenda",
    "minutes",
    "build",
    "passed",
    "failed",
];

/// Deterministic pseudo-random numbers (SplitMix64): the same messages every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// About `bytes` of text in lines of at most 76 characters, CRLF-terminated, with an
/// occasional non-ASCII word. No line starts with a dot.
fn filler(rng: &mut Rng, bytes: usize, ascii_only: bool) -> String {
    let mut out = String::with_capacity(bytes + 80);
    let mut line = String::new();
    while out.len() + line.len() < bytes {
        let w = if !ascii_only && rng.below(40) == 0 {
            "café"
        } else {
            WORDS[rng.below(WORDS.len() as u64) as usize]
        };
        if line.len() + w.len() + 1 > 76 {
            out.push_str(&line);
            out.push_str("\r\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if !line.is_empty() {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() * 4 / 3 + data.len() / 57 * 2 + 4);
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n"); // 76-character lines
        }
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out.push_str("\r\n");
    out
}

/// The kinds of generated mail.
pub const MAIL_KINDS: [&str; 3] = ["plain", "alternative", "attachment"];

/// One message of `kind` with `fill` bytes of filler text (the total is larger).
fn mail_with_fill(kind: &str, i: usize, fill: usize, to: &str, mid: &str) -> String {
    let mut rng = Rng::new(0x7d1_u64 ^ ((i as u64) << 8) ^ kind.len() as u64);
    let headers = format!(
        "From: Backup Bot <bot-{i}@example.org>\r\n\
         To: {to}\r\n\
         Subject: Nightly report #{i}: {kind}\r\n\
         Date: Thu, 26 Nov 2026 22:00:00 +0000\r\n\
         Message-ID: <{mid}>\r\n\
         MIME-Version: 1.0\r\n"
    );
    match kind {
        "plain" => format!(
            "{headers}Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n{}",
            filler(&mut rng, fill, false)
        ),
        "alternative" => {
            let text = filler(&mut rng, fill * 2 / 5, true);
            let mut html = String::from(
                "<html><head><style>td{padding:2px}</style></head><body>\r\n<h1>Report</h1>\r\n<table>\r\n",
            );
            let target = html.len() + fill * 3 / 5;
            let mut row = 0;
            while html.len() < target {
                html.push_str(&format!(
                    "<tr><td><a href=\"https://example.org/r/{row}\">{}</a></td><td><b>{}</b> &amp; {}</td></tr>\r\n",
                    WORDS[rng.below(WORDS.len() as u64) as usize],
                    WORDS[rng.below(WORDS.len() as u64) as usize],
                    WORDS[rng.below(WORDS.len() as u64) as usize],
                ));
                row += 1;
            }
            html.push_str("</table>\r\n</body></html>\r\n");
            format!(
                "{headers}Content-Type: multipart/alternative; boundary=\"alt-{i}\"\r\n\r\n\
                 --alt-{i}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n\
                 --alt-{i}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n\
                 --alt-{i}--\r\n"
            )
        }
        _ => {
            let text = filler(&mut rng, fill / 2, false);
            let attachment: Vec<u8> = (0..fill * 3 / 8).map(|_| rng.next_u64() as u8).collect();
            format!(
                "{headers}Content-Type: multipart/mixed; boundary=\"mix-{i}\"\r\n\r\n\
                 --mix-{i}\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n\
                 --mix-{i}\r\nContent-Type: application/pdf; name=\"statement-{i}.pdf\"\r\n\
                 Content-Disposition: attachment; filename=\"statement-{i}.pdf\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}\r\n\
                 --mix-{i}--\r\n",
                base64(&attachment)
            )
        }
    }
}

/// A message of `kind` of about `size` bytes (CRLF line ends, no line starting with a dot,
/// no terminating dot line) to `to`, with Message-ID `mid`.
pub fn mail_message(kind: &str, i: usize, size: usize, to: &str, mid: &str) -> Vec<u8> {
    let mut fill = size.saturating_sub(600);
    let mut m = mail_with_fill(kind, i, fill, to, mid);
    for _ in 0..8 {
        let diff = size as i64 - m.len() as i64;
        if diff.unsigned_abs() as usize <= size / 200 {
            break;
        }
        fill = (fill as i64 + diff).max(0) as usize;
        m = mail_with_fill(kind, i, fill, to, mid);
    }
    m.into_bytes()
}

fn parse_mails(msgs: &[Vec<u8>]) -> usize {
    let mut n = 0;
    for m in msgs {
        let p = tidings_sources::mail::parse_mail(m);
        n += p.text.len() + p.attachments.len();
        black_box(&p);
    }
    n
}

pub async fn run(a: Args) -> Result<Value> {
    if a.passes == 0 || a.mail_passes == 0 || a.mail_messages == 0 {
        bail!("--passes, --mail-passes and --mail-messages must be positive");
    }
    if a.passes > 10_000 || a.mail_passes > 10_000 || a.mail_messages > 100_000 {
        bail!("--passes and --mail-passes are at most 10000, --mail-messages 100000");
    }
    if !(512..=10 * 1024 * 1024).contains(&a.mail_bytes) {
        bail!("--mail-bytes must be 512 B to 10 MiB");
    }
    // ---- feeds ----
    let docs = load_corpus(&a.corpus)?;
    let bytes: usize = docs.iter().map(|d| d.body.len()).sum();
    eprintln!(
        "parse: {} feed documents, {:.2} MB, from {}",
        docs.len(),
        bytes as f64 / 1e6,
        a.corpus.display()
    );
    let warm = Instant::now();
    let mut items = 0usize;
    for d in &docs {
        items += parse_feed(d);
    }
    let warm = warm.elapsed();
    let (bozo, items) = (items / 1_000_000, items % 1_000_000);
    let mut per_doc_total = vec![0u64; docs.len()];
    let mut per_doc_best = vec![u64::MAX; docs.len()];
    let mut last_pass = vec![0u64; docs.len()];
    let mut feed_passes = Passes {
        times: Vec::new(),
        bytes,
        docs: docs.len(),
    };
    let started = Instant::now();
    for _ in 0..a.passes {
        let t0 = Instant::now();
        for (i, d) in docs.iter().enumerate() {
            let t = Instant::now();
            black_box(parse_feed(d));
            let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            per_doc_total[i] += ns;
            per_doc_best[i] = per_doc_best[i].min(ns);
            last_pass[i] = ns;
        }
        feed_passes.times.push(t0.elapsed());
        if started.elapsed() >= a.max_time {
            break;
        }
    }
    let npass = feed_passes.times.len() as u64;
    // By category, and the slowest documents (mean time per parse).
    let mut cats: BTreeMap<&str, (usize, usize, u64)> = BTreeMap::new();
    for (d, &ns) in docs.iter().zip(&per_doc_total) {
        let e = cats.entry(&d.category).or_default();
        e.0 += 1;
        e.1 += d.body.len();
        e.2 += ns;
    }
    // Best of the passes: a document is slow by itself, not because a pass was preempted.
    let mut slow: Vec<(usize, u64)> = per_doc_best.iter().copied().enumerate().collect();
    slow.sort_by_key(|&(_, ns)| std::cmp::Reverse(ns));
    slow.truncate(5);

    // ---- mail ----
    let mut kinds = Vec::new();
    for kind in MAIL_KINDS {
        let msgs: Vec<Vec<u8>> = (0..a.mail_messages)
            .map(|i| {
                mail_message(
                    kind,
                    i,
                    a.mail_bytes,
                    "bench@bench.test",
                    &format!("{kind}.{i}@load.test"),
                )
            })
            .collect();
        // Sanity: the parser finds what we put in.
        let probe = tidings_sources::mail::parse_mail(&msgs[0]);
        if probe.text.is_empty() || (kind == "attachment" && probe.attachments.len() != 1) {
            bail!(
                "generated {kind} mail does not parse as expected: {} chars of text, {} attachments, warnings {:?}",
                probe.text.len(),
                probe.attachments.len(),
                probe.warnings
            );
        }
        black_box(parse_mails(&msgs)); // warm-up
        let mbytes: usize = msgs.iter().map(Vec::len).sum();
        let mut p = Passes {
            times: Vec::new(),
            bytes: mbytes,
            docs: msgs.len(),
        };
        let mut per_msg = Vec::with_capacity(msgs.len());
        let started = Instant::now();
        for pass in 0..a.mail_passes {
            let t0 = Instant::now();
            if pass == 0 {
                for m in &msgs {
                    let t = Instant::now();
                    black_box(tidings_sources::mail::parse_mail(m));
                    per_msg.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                }
            } else {
                black_box(parse_mails(&msgs));
            }
            p.times.push(t0.elapsed());
            if started.elapsed() >= a.max_time {
                break;
            }
        }
        kinds.push((
            kind,
            mbytes / msgs.len(),
            p,
            per_msg,
            probe.text.chars().count(),
        ));
    }
    let mail_total = Passes {
        times: vec![kinds.iter().map(|k| k.2.total()).sum()],
        bytes: kinds
            .iter()
            .map(|k| k.2.bytes * k.2.times.len())
            .sum::<usize>(),
        docs: kinds.iter().map(|k| k.2.docs * k.2.times.len()).sum(),
    };

    // ---- report ----
    let (lo, med, hi) = feed_passes.spread();
    println!(
        "== parse: tidings_feed::parse over {} ({} documents, {:.2} MB), one thread",
        a.corpus.display(),
        docs.len(),
        bytes as f64 / 1e6
    );
    println!(
        "warm-up pass       {:.3} s ({items} items, {bozo} bozo documents)",
        warm.as_secs_f64()
    );
    println!(
        "measured           {npass} passes in {:.3} s: {:.2} MB/s, {:.0} documents/s (per pass: min {lo:.2}, median {med:.2}, max {hi:.2} MB/s)",
        feed_passes.total().as_secs_f64(),
        feed_passes.mb_s(),
        feed_passes.docs_s()
    );
    let doc_json = per_doc_json(last_pass.clone());
    println!(
        "per document       p50 {} µs  p90 {} µs  p99 {} µs  max {} µs  mean {} µs (one pass)",
        doc_json["p50_us"],
        doc_json["p90_us"],
        doc_json["p99_us"],
        doc_json["max_us"],
        doc_json["mean_us"]
    );
    let mut cat_json = serde_json::Map::new();
    for (c, (n, b, ns)) in &cats {
        let secs = *ns as f64 / 1e9 / npass as f64;
        let mbs = *b as f64 / 1e6 / secs.max(1e-12);
        let dps = *n as f64 / secs.max(1e-12);
        println!(
            "  {c:<12} {n:>5} docs {:>8.3} MB  {mbs:>7.2} MB/s  {dps:>9.0} docs/s",
            *b as f64 / 1e6
        );
        cat_json.insert(
            (*c).to_string(),
            json!({"documents": n, "bytes": b, "mb_per_s": round3(mbs), "docs_per_s": round3(dps)}),
        );
    }
    let mut slow_json = Vec::new();
    println!("slowest documents (best of {npass} parses):");
    for (i, ns) in &slow {
        let d = &docs[*i];
        let us = *ns as f64 / 1000.0;
        let mbs = d.body.len() as f64 / us.max(1e-9);
        println!(
            "  {:>9.1} µs  {:>8} B  {mbs:>7.2} MB/s  {}",
            us,
            d.body.len(),
            d.file
        );
        slow_json.push(json!({"file": d.file, "bytes": d.body.len(), "us": round3(us), "mb_per_s": round3(mbs)}));
    }
    println!(
        "== parse: tidings_sources::mail::parse_mail, {} generated messages per kind",
        a.mail_messages
    );
    let mut mail_json = serde_json::Map::new();
    for (kind, size, p, per_msg, text_chars) in &kinds {
        let (lo, _, hi) = p.spread();
        let pm = per_doc_json(per_msg.clone());
        println!(
            "  {kind:<12} {size:>6} B each  {:>8.2} MB/s  {:>8.0} messages/s  (passes {}: {lo:.2}-{hi:.2} MB/s; per message p50 {} µs, p99 {} µs; {text_chars} chars of text)",
            p.mb_s(),
            p.docs_s(),
            p.times.len(),
            pm["p50_us"],
            pm["p99_us"]
        );
        let mut j = p.json();
        j["message_bytes"] = json!(size);
        j["per_message"] = pm;
        j["text_chars"] = json!(text_chars);
        mail_json.insert((*kind).to_string(), j);
    }
    println!(
        "  {:<12} {:>6} B each  {:>8.2} MB/s  {:>8.0} messages/s",
        "all kinds",
        mail_total.bytes / mail_total.docs.max(1),
        mail_total.mb_s(),
        mail_total.docs_s()
    );
    let mut feeds = feed_passes.json();
    feeds["warmup_s"] = json!(round3(warm.as_secs_f64()));
    feeds["items"] = json!(items);
    feeds["bozo_documents"] = json!(bozo);
    feeds["per_document"] = doc_json;
    feeds["categories"] = Value::Object(cat_json);
    feeds["slowest"] = json!(slow_json);
    Ok(json!({
        "scenario": "parse",
        "corpus": a.corpus.display().to_string(),
        "threads": 1,
        "feeds": feeds,
        "mail": {
            "kinds": mail_json,
            "messages_per_kind": a.mail_messages,
            "mb_per_s": round3(mail_total.mb_s()),
            "messages_per_s": round3(mail_total.docs_s()),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_mail_has_the_size_and_parses() {
        for kind in MAIL_KINDS {
            let m = mail_message(kind, 3, 10 * 1024, "a@b.test", "x.3@load.test");
            let len = m.len() as i64;
            assert!(
                (len - 10 * 1024).abs() <= 10 * 1024 / 100,
                "{kind}: {len} B"
            );
            let text = String::from_utf8(m.clone()).unwrap();
            assert!(!text.contains("\r\n."), "{kind}: a line starts with a dot");
            assert!(
                !text.replace("\r\n", "").contains('\n'),
                "{kind}: bare LF in {text}"
            );
            let p = tidings_sources::mail::parse_mail(&m);
            assert_eq!(p.message_id.as_deref(), Some("x.3@load.test"), "{kind}");
            assert!(p.text.len() > 1000, "{kind}: {} chars", p.text.len());
            assert_eq!(
                p.attachments.len(),
                usize::from(kind == "attachment"),
                "{kind}"
            );
            assert!(p.warnings.is_empty(), "{kind}: {:?}", p.warnings);
        }
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64(b"Man"), "TWFu\r\n");
        assert_eq!(base64(b"Ma"), "TWE=\r\n");
        assert_eq!(base64(b"M"), "TQ==\r\n");
    }
}
