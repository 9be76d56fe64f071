//! IM commands against real services (SQLite store, avatars, the ingest queue and its
//! dispatcher): what a user chatting with tidings gets back, and what it changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_bus::queue::{DispatcherConfig, EmbeddedQueue, IngestQueue};
use tidings_core::ids::source_avatar;
use tidings_core::{Notification, NotificationId, Priority};
use tidings_routing::ingest::Ingest;
use tidings_routing::user::UserMsg;
use tidings_routing::{Directory, Services, im};
use tidings_store::{Store, StoreOptions};
use tokio::sync::watch;

struct World {
    services: Arc<Services>,
    queue: Arc<dyn IngestQueue>,
    user: i64,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db"), StoreOptions::default()).unwrap();
    let directory = Arc::new(Directory::load(store.clone()).await.unwrap());
    let user = directory
        .create_user("alice", None, false)
        .await
        .unwrap()
        .id;
    let queue = EmbeddedQueue::new(store.clone());
    let queue_dyn: Arc<dyn IngestQueue> = Arc::new(queue.clone());
    let services =
        Services::start(store, directory, queue_dyn.clone(), Default::default()).unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(queue.run_dispatcher(
        tidings_routing::ingest::handler(services.clone()),
        DispatcherConfig::default(),
        rx,
    ));
    World {
        services,
        queue: queue_dyn,
        user,
        _stop: stop,
        _dir: dir,
    }
}

async fn say(w: &World, text: &str) -> String {
    im::execute(&w.services, w.user, text).await
}

async fn publish(w: &World, topic: &str, title: &str) {
    let now = tidings_store::now_ms();
    let n = Notification {
        id: NotificationId::new(now),
        time: now / 1000,
        event: "message".into(),
        source: format!("topic:{topic}"),
        topic: Some(topic.into()),
        title: Some(title.into()),
        message: format!("{title} body"),
        priority: Priority::Default,
        tags: vec![],
        click: None,
        actions: vec![],
        author: None,
    };
    let payload = serde_json::to_string(&Ingest::Publish {
        notification: n,
        bypass_filters: false,
        reply_url: None,
    })
    .unwrap();
    w.queue
        .append(source_avatar(&format!("topic:{topic}")), payload)
        .await
        .unwrap();
}

async fn until(w: &World, text: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = say(w, text).await;
        if got.contains(want) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} never answered {want:?}: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn commands_answer_and_change_state_like_the_api() {
    let w = world().await;
    assert!(say(&w, "help").await.contains("`sub URL"));
    assert!(say(&w, "?").await.contains("`list`"));
    let unknown = say(&w, "dance").await;
    assert!(
        unknown.contains("I don't know \"dance\"") && unknown.contains("help"),
        "{unknown}"
    );
    assert!(say(&w, "list").await.contains("No subscriptions yet"));
    assert!(say(&w, "history").await.contains("Nothing in your history"));

    let sub = say(&w, "sub backups failed error").await;
    assert_eq!(sub, "Subscribed: topic backups – only: failed, error");
    assert!(
        say(&w, "list")
            .await
            .contains("1. topic backups – only: failed, error")
    );
    let bad = say(&w, "sub no/such/topic!").await;
    assert!(bad.starts_with("That did not work:"), "{bad}");

    publish(&w, "backups", "nightly failed").await;
    publish(&w, "backups", "weekly ok").await; // filtered out: no keyword
    publish(&w, "backups", "monthly error").await;
    let h = until(&w, "history", "2. nightly failed").await;
    assert!(h.contains("1. monthly error"), "{h}");
    assert!(!h.contains("weekly"), "{h}");

    assert_eq!(say(&w, "ack 2").await, "Acknowledged: nightly failed");
    assert_eq!(
        say(&w, "ack 2").await,
        "Already acknowledged: nightly failed"
    );
    assert!(say(&w, "history").await.contains("2. nightly failed ✓"));
    assert!(say(&w, "ack 9").await.contains("there is no item 9"));

    // A reply is durable first, then an ack; a topic without Reply-To-Url notes where it went.
    let r = say(&w, "reply 1 looking into it").await;
    assert!(r.starts_with("Reply sent for: monthly error"), "{r}");
    until(&w, "history", "Your reply was not forwarded").await;
    assert!(say(&w, "history 3").await.contains("monthly error ✓"));

    let p = say(&w, "pause 2h").await;
    assert!(p.starts_with("Paused until ") && p.contains("UTC"), "{p}");
    let settings = w
        .services
        .users()
        .ask(
            &tidings_core::ids::user_avatar(w.user),
            |reply| UserMsg::GetSettings { reply },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let until_ms = settings.paused_until.expect("paused");
    assert!(until_ms > tidings_store::now_ms() + 7_000_000);
    assert!(say(&w, "pause").await.contains("until you send *resume*"));
    assert_eq!(say(&w, "resume").await, "Resumed: anything held comes now.");

    assert_eq!(
        say(&w, "unsub 1").await,
        "Unsubscribed: topic backups – only: failed, error"
    );
    assert!(
        say(&w, "unsub 1")
            .await
            .contains("there is no subscription 1")
    );
}

#[test]
fn a_notification_reads_well_as_an_instant_message() {
    let n = Notification {
        id: NotificationId::new(1),
        time: 1,
        event: "message".into(),
        source: "topic:x".into(),
        topic: Some("x".into()),
        title: Some("Disk *almost* full".into()),
        message: "a".repeat(50),
        priority: Priority::High,
        tags: vec![],
        click: Some("https://grafana.example/d".into()),
        actions: vec![],
        author: None,
    };
    let m = im::format_message(&n, "servers", Some("https://t.example/n/1"), 20);
    assert_eq!(
        m,
        format!(
            "*Disk ∗almost∗ full*\n{}…\n(more: https://t.example/n/1)\nhttps://grafana.example/d\n_servers_",
            "a".repeat(19)
        )
    );
}
