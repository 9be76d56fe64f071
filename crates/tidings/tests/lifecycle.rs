//! Process lifecycle: first start, the CLI, graceful shutdown on SIGTERM, and durability
//! across `kill -9` in the middle of a publish burst.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn first_start_prints_admin_token_and_a_one_time_signin_link() {
    let s = Server::start();
    let out = s.output();
    assert!(out.contains("API token:"), "{out}");
    let link = out
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.contains("/signin/")))
        .unwrap_or_else(|| panic!("no sign-in link in:\n{out}"))
        .to_owned();
    // admin.token is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.dir.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly"));
    let session = cookie.split(';').next().unwrap().to_owned();
    // The session works like a token.
    let r = c
        .get(format!("{}/api/v1/account", s.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user"]["name"], "admin");
    assert_eq!(v["user"]["is_admin"], true);
    // The link works once.
    let r = c.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn cli_manages_users_and_tokens_through_the_server() {
    let s = Server::start();
    let out = s.cli(&["user", "add", "carol"]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(publish(&s.url, &token, "c1", "hello").await.status(), 200);

    let out = s.cli(&["user", "list"]);
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(list.contains("carol") && list.contains("admin"), "{list}");

    let out = s.cli(&["token", "create", "carol", "--label", "phone"]);
    assert!(out.status.success());
    let second = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let (st, _) = get_json(&format!("{}/api/v1/account", s.url), &second).await;
    assert_eq!(st, 200);
    let out = s.cli(&["token", "list", "carol"]);
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains("phone"), "{listing}");
    assert!(
        !listing.contains(&second),
        "a token secret must never be listed"
    );

    // Revoke the second token by id (from the API).
    let (_, toks) = get_json(&format!("{}/api/v1/tokens", s.url), &second).await;
    let id = toks["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "phone")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let out = s.cli(&["token", "revoke", &id.to_string()]);
    assert!(out.status.success());
    let (st, _) = get_json(&format!("{}/api/v1/account", s.url), &second).await;
    assert_eq!(st, 401);

    let out = s.cli(&["user", "add", "carol"]);
    assert!(!out.status.success(), "duplicate user must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let out = s.cli(&["user", "remove", "carol"]);
    assert!(out.status.success());
    let (st, _) = get_json(&format!("{}/api/v1/account", s.url), &token).await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero_with_streams_open() {
    let mut s = Server::start();
    let t = s.user("alice").await;
    let stream = client()
        .get(format!("{}/api/v1/stream", s.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    for i in 0..20 {
        assert_eq!(
            publish(&s.url, &t, "drain", &format!("m{i}"))
                .await
                .status(),
            200
        );
    }
    let status = s.terminate();
    assert!(status.success(), "exit {status}:\n{}", s.output());
    drop(stream);
    // Everything acknowledged is there after a restart.
    s.spawn();
    let h = eventually(10, || async {
        let h = history(&s.url, &t).await;
        (h.len() == 20).then_some(h)
    })
    .await;
    assert_eq!(h.len(), 20);
}

#[tokio::test]
async fn kill_9_mid_burst_loses_no_acknowledged_publish_and_duplicates_none() {
    let mut s = Server::start();
    let t = s.user("alice").await;
    // A few clients publish as fast as they can; the server is killed under them.
    let url = s.url.clone();
    let mut tasks = Vec::new();
    for client_no in 0..6 {
        let (url, t) = (url.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap();
            let mut acked = Vec::new();
            for i in 0..100_000 {
                let r = c
                    .post(format!("{url}/burst"))
                    .bearer_auth(&t)
                    .body(format!("c{client_no}-{i}"))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        acked.push(v["id"].as_str().unwrap().to_owned());
                    }
                    _ => break, // the server is gone
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    s.kill9();
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    assert!(
        acked.len() > 50,
        "the burst should have been running: {} acked",
        acked.len()
    );

    s.spawn();
    let all = eventually(60, || async {
        let mut ids: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                Some(c) => format!("{}/api/v1/notifications?limit=1000&cursor={c}", s.url),
                None => format!("{}/api/v1/notifications?limit=1000", s.url),
            };
            let (_, v) = get_json(&q, &t).await;
            for n in v["notifications"].as_array().unwrap() {
                ids.push(n["id"].as_str().unwrap().to_owned());
            }
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        (ids.len() >= acked.len()).then_some(ids)
    })
    .await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &all {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    assert!(
        counts.values().all(|c| *c == 1),
        "a notification shows twice in history"
    );
    for id in &acked {
        assert!(
            counts.contains_key(id.as_str()),
            "acknowledged publish {id} lost"
        );
    }
    // The queue drained after the restart.
    eventually(20, || async {
        (sqlite_count(&s.db_path(), "SELECT count(*) FROM ingest_queue") == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn avatars_passivate_when_idle_and_reactivate_on_the_next_message() {
    let s = Server::start_with(&[("TIDINGS_AVATARS_IDLE_TIMEOUT", "100ms")]);
    let t = s.user("alice").await;
    let metric = |text: &str, name: &str, kind: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(&format!("kind=\"{kind}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let scrape = || async {
        client()
            .get(format!("{}/metrics", s.url))
            .bearer_auth(&s.admin_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    for round in 0..3 {
        assert_eq!(
            publish(&s.url, &t, "idle", &format!("r{round}"))
                .await
                .status(),
            200
        );
        eventually(10, || async {
            (history(&s.url, &t).await.len() == round + 1).then_some(())
        })
        .await;
        // Both avatars go idle and are passivated before the next round.
        eventually(10, || async {
            let m = scrape().await;
            (metric(&m, "tidings_avatar_passivations_total", "user") >= (round + 1) as f64
                && metric(&m, "tidings_avatar_passivations_total", "source") >= (round + 1) as f64)
                .then_some(())
        })
        .await;
    }
    let m = scrape().await;
    assert!(
        metric(&m, "tidings_avatar_activations_total", "user") >= 3.0,
        "{m}"
    );
    assert!(m.contains("tidings_avatars_active"), "{m}");
    assert!(m.contains("tidings_http_requests_total"), "{m}");
    // Every message is in history once.
    let h = history(&s.url, &t).await;
    let msgs: Vec<&str> = h
        .iter()
        .rev()
        .map(|n| n["message"].as_str().unwrap())
        .collect();
    assert_eq!(msgs, ["r0", "r1", "r2"]);
}

#[tokio::test]
async fn health_readiness_and_unknown_config_keys() {
    let s = Server::start();
    let (st, v) = get_json(&format!("{}/healthz", s.url), "").await;
    assert_eq!((st, v["status"].as_str()), (200, Some("ok")));
    let (st, _) = get_json(&format!("{}/readyz", s.url), "").await;
    assert_eq!(st, 200);
    let (st, v) = get_json(&format!("{}/api/v1/openapi.json", s.url), "").await;
    assert_eq!(st, 200);
    assert!(v["paths"]["/api/v1/notifications"].is_object());

    // A config file with an unknown key is refused, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[http]\nlisten = \"127.0.0.1:0\"\nlisen_typo = 1\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen_typo"));
    // So is an unknown TIDINGS_ variable.
    let out = std::process::Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("d"))
        .env("TIDINGS_HTTP_LISEN", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TIDINGS_HTTP_LISEN"));
}

#[tokio::test]
async fn user_passwd_sets_a_password_and_ends_old_sessions() {
    use std::io::Write as _;
    let s = Server::start();
    assert!(s.cli(&["user", "add", "dora"]).status.success());
    let passwd = |password: &str| {
        let mut child = std::process::Command::new(BIN)
            .args(["user", "passwd", "dora", "--data-dir"])
            .arg(&s.dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let login = |password: &'static str| {
        let url = s.url.clone();
        async move {
            client()
                .post(format!("{url}/api/v1/login"))
                .json(&serde_json::json!({"name": "dora", "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(login("first password").await.status(), 401);
    let out = passwd("first password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("password set for dora"));
    let r = login("first password").await;
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let with_cookie = |cookie: String| {
        let url = s.url.clone();
        async move {
            client()
                .get(format!("{url}/api/v1/account"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(with_cookie(cookie.clone()).await, 200);

    // A new password signs the old session out; the old password stops working.
    let out = passwd("second password");
    assert!(out.status.success());
    assert_eq!(with_cookie(cookie).await, 401);
    assert_eq!(login("first password").await.status(), 401);
    assert_eq!(login("second password").await.status(), 200);
    // Too short is refused, and nothing changes.
    let out = passwd("short");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("8-1024"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(login("second password").await.status(), 200);
}
