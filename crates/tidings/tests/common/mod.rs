//! A real `tidings serve` process for end-to-end tests: its own temp data dir, a free port
//! on 127.0.0.1, and helpers to talk to it over real HTTP.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_tidings");

pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub dir: PathBuf,
    pub admin_token: String,
    env: Vec<(String, String)>,
    /// Keeps the temp dir alive (and removes it at the end).
    _tmp: Option<tempfile::TempDir>,
    pub stdout_path: PathBuf,
}

impl Server {
    /// Starts a server in a fresh temp data dir.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with extra `TIDINGS_*` environment variables.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("data");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut s = Server {
            child: None,
            url: String::new(),
            dir,
            admin_token: String::new(),
            env,
            _tmp: Some(tmp),
            stdout_path: PathBuf::new(),
        };
        s.spawn();
        s
    }

    /// Starts (again) on the same data dir.
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("server.json"));
        std::fs::create_dir_all(&self.dir).expect("data dir");
        let n = std::fs::read_dir(self.dir.parent().unwrap())
            .map(|d| d.count())
            .unwrap_or(0);
        self.stdout_path = self.dir.parent().unwrap().join(format!("stdout-{n}.log"));
        let out = std::fs::File::create(&self.stdout_path).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--data-dir"]).arg(&self.dir);
        // A test that needs to know the port in advance (a public base URL) sets it itself.
        if !self.env.iter().any(|(k, _)| k == "TIDINGS_HTTP_LISTEN") {
            cmd.args(["--http-listen", "127.0.0.1:0"]);
        }
        cmd.env("TIDINGS_LOG", "info")
            .env("TIDINGS_HTTP_RATE_LIMIT_PER_SECOND", "100000")
            .env("TIDINGS_HTTP_RATE_LIMIT_BURST", "100000")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn tidings"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = std::fs::read_to_string(self.dir.join("server.json"))
                && let Ok(v) = serde_json::from_str::<Value>(&s)
            {
                self.url = v["url"].as_str().unwrap_or_default().to_owned();
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tidings exited early with {status}:\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.admin_token = std::fs::read_to_string(self.dir.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_owned();
    }

    /// What the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (at most 30 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "server did not exit within 30 s of SIGTERM:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("tidings.db")
    }

    /// Runs the CLI against this server's data dir.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .output()
            .expect("run tidings CLI")
    }

    /// Creates a user through the admin API; returns their token.
    pub async fn user(&self, name: &str) -> String {
        let r = client()
            .post(format!("{}/api/v1/admin/users", self.url))
            .bearer_auth(&self.admin_token)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "create user {name}");
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Publishes like `curl -H "Authorization: Bearer $TOKEN" -d MESSAGE URL/TOPIC`.
pub async fn publish(url: &str, token: &str, topic: &str, message: &str) -> reqwest::Response {
    client()
        .post(format!("{url}/{topic}"))
        .bearer_auth(token)
        .body(message.to_owned())
        .send()
        .await
        .unwrap()
}

/// GET with a token; returns status and JSON body.
pub async fn get_json(url: &str, token: &str) -> (u16, Value) {
    let r = client().get(url).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(Value::Null);
    (status, v)
}

/// The user's history (newest first), up to 1000 items.
pub async fn history(url: &str, token: &str) -> Vec<Value> {
    let (s, v) = get_json(&format!("{url}/api/v1/notifications?limit=1000"), token).await;
    assert_eq!(s, 200, "{v}");
    v["notifications"].as_array().cloned().unwrap_or_default()
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asserts the JSON error shape and returns its code.
pub fn error_code(v: &Value) -> String {
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"));
    assert!(
        v["error"]["message"].is_string(),
        "error without message: {v}"
    );
    code.to_owned()
}

/// Reads an SSE stream until `n` message events have arrived (or `secs` pass).
pub async fn sse_messages(resp: reqwest::Response, n: usize, secs: u64) -> Vec<Value> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while out.len() < n {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => break,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let mut kind = "message";
            let mut data = String::new();
            for line in event.lines() {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = if k.trim() == "message" {
                        "message"
                    } else {
                        "other"
                    };
                }
                if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if kind == "message" && !data.is_empty() {
                out.push(serde_json::from_str(&data).unwrap());
            }
        }
    }
    out
}

pub fn sqlite_count(db: &Path, sql: &str) -> i64 {
    let c = tidings_store::rusqlite::Connection::open_with_flags(
        db,
        tidings_store::rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}
