//! Live streams.
//!
//! - `GET /api/v1/stream` (SSE) and `GET /api/v1/ws` (WebSocket): the caller's own
//!   deliveries. An open one counts as presence "online (web)". Resume with `Last-Event-ID`
//!   (SSE) or `since=` (a notification id, unix seconds, a duration like `10m`, or `all`):
//!   what was missed is replayed from history first.
//! - `GET /<topic>/json|sse|ws` (ntfy-compatible): a topic's messages, for its owner and
//!   users granted subscribe; `since=` as above, `poll=1` to get what is stored and close.
//!
//! Each stream is a task that replays, then forwards live items, keepalives and the end of
//! the stream (server shutdown, client gone, or a client too slow to keep up, which is told
//! to resume from where it was).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::json;
use tidings_core::{Notification, NotificationId, TopicName};
use tidings_routing::agents::live::StreamGuard;
use tidings_routing::directory::TopicAccess;
use tidings_routing::history::{self, HistoryQuery};
use tokio::sync::{broadcast, mpsc};

use crate::AppState;
use crate::api::parse_time;
use crate::auth::Authed;
use crate::error::{ApiError, ApiResult};
use crate::publish::claim_topic;

/// Most items replayed when a stream opens; older ones are in the history API.
const MAX_REPLAY: usize = 1000;

/// What a stream sends.
#[derive(Debug)]
enum Out {
    Open,
    Message(Arc<Notification>),
    Keepalive,
    /// The client fell behind; it should reconnect and resume from its last id.
    Resync,
}

/// Where a stream resumes from.
#[derive(Debug, Clone, PartialEq)]
enum Since {
    Nothing,
    All,
    Time(i64),
    Id(String),
}

fn parse_since(v: Option<&str>) -> ApiResult<Since> {
    match v.map(str::trim) {
        None | Some("") => Ok(Since::Nothing),
        Some("all") => Ok(Since::All),
        Some(v) if NotificationId::parse(v).is_some() => Ok(Since::Id(v.to_owned())),
        Some(v) => parse_time("since", v).map(Since::Time),
    }
}

enum Live {
    User {
        rx: broadcast::Receiver<Arc<Notification>>,
        _guard: StreamGuard,
    },
    Topic {
        rx: broadcast::Receiver<Arc<Notification>>,
        topic: String,
        user_id: i64,
    },
    /// `poll=1`: replay only.
    None,
}

/// Runs a stream: replay, then live items until shutdown or the client leaves.
fn spawn_feed(state: &AppState, replay: Vec<Notification>, live: Live) -> mpsc::Receiver<Out> {
    let (tx, rx) = mpsc::channel(256);
    let mut shutdown = state.shutdown_signal();
    let keepalive = state.cfg().keepalive;
    let dir = state.services().directory.clone();
    tokio::spawn(async move {
        if tx.send(Out::Open).await.is_err() {
            return;
        }
        let mut seen: HashSet<String> = HashSet::with_capacity(replay.len());
        for n in replay {
            seen.insert(n.id.to_string());
            if tx.send(Out::Message(Arc::new(n))).await.is_err() {
                return;
            }
        }
        match live {
            Live::User { mut rx, _guard } => {
                forward(
                    &mut rx,
                    None,
                    &tx,
                    &mut seen,
                    &mut shutdown,
                    keepalive,
                    &dir,
                )
                .await;
                // The guard (presence "online") lives exactly as long as the stream.
                drop(_guard);
            }
            Live::Topic {
                mut rx,
                topic,
                user_id,
            } => {
                let t = Some((topic, user_id));
                forward(&mut rx, t, &tx, &mut seen, &mut shutdown, keepalive, &dir).await;
            }
            Live::None => {}
        }
    });
    rx
}

async fn forward(
    rx: &mut broadcast::Receiver<Arc<Notification>>,
    topic: Option<(String, i64)>,
    tx: &mpsc::Sender<Out>,
    seen: &mut HashSet<String>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    keepalive: std::time::Duration,
    dir: &tidings_routing::Directory,
) {
    let mut tick = tokio::time::interval(keepalive);
    tick.tick().await;
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
            _ = tick.tick() => {
                if tx.send(Out::Keepalive).await.is_err() { return; }
            }
            r = rx.recv() => match r {
                Ok(n) => {
                    if let Some((t, user_id)) = &topic {
                        // A grant revoked while the stream is open ends the stream.
                        if !dir.topic_access(t, *user_id).can_subscribe() {
                            return;
                        }
                    }
                    if !seen.is_empty() && seen.remove(n.id.as_str()) {
                        continue; // already sent by the replay
                    }
                    if tx.send(Out::Message(n)).await.is_err() { return; }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = tx.send(Out::Resync).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn into_stream(rx: mpsc::Receiver<Out>) -> impl Stream<Item = Out> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (o, rx)) })
}

fn sse_event(o: Out, topic: Option<&str>) -> Event {
    match o {
        Out::Open => Event::default()
            .event("open")
            .data(json!({"event": "open", "topic": topic}).to_string()),
        Out::Message(n) => Event::default()
            .event("message")
            .id(n.id.to_string())
            .data(serde_json::to_string(&*n).unwrap_or_default()),
        Out::Keepalive => Event::default()
            .event("keepalive")
            .data(json!({"event": "keepalive", "time": tidings_store::now_ms() / 1000}).to_string()),
        Out::Resync => Event::default().event("resync").data(
            json!({"event": "resync", "message": "the stream fell behind; reconnect with Last-Event-ID to resume"})
                .to_string(),
        ),
    }
}

fn json_line(o: &Out, topic: Option<&str>) -> String {
    let now = tidings_store::now_ms() / 1000;
    let v = match o {
        Out::Open => json!({"event": "open", "time": now, "topic": topic}),
        Out::Message(n) => serde_json::to_value(&**n).unwrap_or_default(),
        Out::Keepalive => json!({"event": "keepalive", "time": now, "topic": topic}),
        Out::Resync => json!({"event": "resync", "time": now,
            "message": "the stream fell behind; reconnect with since=<last id> to resume"}),
    };
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Replays a user's history from a resume point, oldest first.
async fn user_replay(state: &AppState, user_id: i64, since: Since) -> ApiResult<Vec<Notification>> {
    let store = &state.services().store;
    let mut q = HistoryQuery {
        user_id,
        limit: MAX_REPLAY,
        ..Default::default()
    };
    match since {
        Since::Nothing => return Ok(Vec::new()),
        Since::All => q.after = Some(0),
        Since::Time(t) => {
            q.after = Some(0);
            q.since = Some(t);
        }
        Since::Id(id) => match history::seq_of(store, user_id, &id).await? {
            Some(seq) => q.after = Some(seq),
            // An id not in this history resumes nothing rather than everything.
            None => return Ok(Vec::new()),
        },
    }
    let (items, _) = history::list(store, q).await?;
    Ok(items.into_iter().map(|i| i.notification).collect())
}

fn last_event_id(headers: &HeaderMap, q: &HashMap<String, String>) -> Option<String> {
    q.get("since").cloned().or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    })
}

/// `GET /api/v1/stream`.
pub async fn user_sse(
    State(state): State<AppState>,
    auth: Authed,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query?;
    let since = parse_since(last_event_id(&headers, &q).as_deref())?;
    let (rx, guard) = state.services().live.open_user(auth.user.id);
    let replay = user_replay(&state, auth.user.id, since).await?;
    let out = spawn_feed(&state, replay, Live::User { rx, _guard: guard });
    let events = into_stream(out).map(|o| Ok::<_, Infallible>(sse_event(o, None)));
    Ok(sse_response(Sse::new(events)))
}

fn sse_response<S>(sse: Sse<S>) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let mut r = sse.into_response();
    // Tell proxies not to buffer the stream.
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// `GET /api/v1/ws`.
pub async fn user_ws(
    State(state): State<AppState>,
    auth: Authed,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let Query(q) = query?;
    let ws = ws?;
    let since = parse_since(q.get("since").map(String::as_str))?;
    let replay = user_replay(&state, auth.user.id, since).await?;
    let user_id = auth.user.id;
    Ok(ws.on_upgrade(move |socket| async move {
        let (rx, guard) = state.services().live.open_user(user_id);
        let out = spawn_feed(&state, replay, Live::User { rx, _guard: guard });
        run_ws(socket, out, None).await;
    }))
}

async fn run_ws(socket: WebSocket, mut out: mpsc::Receiver<Out>, topic: Option<String>) {
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            o = out.recv() => match o {
                Some(o) => {
                    let line = json_line(&o, topic.as_deref());
                    if sink.send(Message::Text(line.trim_end().to_owned().into())).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
            },
            m = incoming.next() => match m {
                // Clients only need to read; pings are answered by the library.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Checks (and for an unowned topic, claims) the right to read a topic.
async fn topic_access(state: &AppState, auth: &Authed, topic: &str) -> ApiResult<TopicName> {
    let topic = TopicName::parse(topic)?;
    let dir = &state.services().directory;
    if dir.topic_access(topic.as_str(), auth.user.id) == TopicAccess::Unclaimed {
        claim_topic(state, auth.user.id, &topic).await?;
    }
    if !dir
        .topic_access(topic.as_str(), auth.user.id)
        .can_subscribe()
    {
        return Err(ApiError::forbidden(format!(
            "topic {topic:?} belongs to another user who has not granted you subscribe"
        )));
    }
    Ok(topic)
}

struct TopicStream {
    topic: String,
    out: mpsc::Receiver<Out>,
}

async fn open_topic(
    state: &AppState,
    auth: &Authed,
    topic: &str,
    q: &HashMap<String, String>,
) -> ApiResult<TopicStream> {
    let topic = topic_access(state, auth, topic).await?;
    let since = parse_since(q.get("since").map(String::as_str))?;
    let poll = q
        .get("poll")
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes"));
    // Subscribe before reading stored messages so nothing falls between the two.
    let rx = state.services().live.open_topic(topic.as_str());
    let (from, after) = match since {
        Since::Nothing if !poll => (None, None),
        Since::Nothing | Since::All => (Some(0), None),
        Since::Time(t) => (Some(t), None),
        Since::Id(id) => (Some(0), Some(id)),
    };
    let replay = match from {
        Some(from) => {
            history::topic_messages(
                &state.services().store,
                &topic.source_id(),
                from,
                after,
                MAX_REPLAY,
            )
            .await?
        }
        None => Vec::new(),
    };
    let live = if poll {
        Live::None
    } else {
        Live::Topic {
            rx,
            topic: topic.as_str().to_owned(),
            user_id: auth.user.id,
        }
    };
    Ok(TopicStream {
        topic: topic.as_str().to_owned(),
        out: spawn_feed(state, replay, live),
    })
}

/// `GET /<topic>/json`: newline-delimited JSON, as ntfy sends it.
pub async fn topic_json(
    State(state): State<AppState>,
    auth: Authed,
    Path(topic): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query?;
    let ts = open_topic(&state, &auth, &topic, &q).await?;
    let name = ts.topic;
    let lines = into_stream(ts.out)
        .map(move |o| Ok::<_, Infallible>(Bytes::from(json_line(&o, Some(&name)))));
    let mut r = Response::new(Body::from_stream(lines));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson; charset=utf-8"),
    );
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// `GET /<topic>/sse`.
pub async fn topic_sse(
    State(state): State<AppState>,
    auth: Authed,
    Path(topic): Path<String>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(mut q) = query?;
    if let Some(id) = last_event_id(&headers, &q) {
        q.insert("since".into(), id);
    }
    let ts = open_topic(&state, &auth, &topic, &q).await?;
    let name = ts.topic;
    let events = into_stream(ts.out).map(move |o| Ok::<_, Infallible>(sse_event(o, Some(&name))));
    Ok(sse_response(Sse::new(events)))
}

/// `GET /<topic>/ws`.
pub async fn topic_ws(
    State(state): State<AppState>,
    auth: Authed,
    Path(topic): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let Query(q) = query?;
    let ws = ws?;
    let ts = open_topic(&state, &auth, &topic, &q).await?;
    Ok(ws.on_upgrade(move |socket| run_ws(socket, ts.out, Some(ts.topic))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        assert_eq!(parse_since(None).unwrap(), Since::Nothing);
        assert_eq!(parse_since(Some("all")).unwrap(), Since::All);
        assert_eq!(
            parse_since(Some("1700000000")).unwrap(),
            Since::Time(1_700_000_000)
        );
        assert!(matches!(parse_since(Some("10m")).unwrap(), Since::Time(_)));
        let id = NotificationId::new(1).to_string();
        assert_eq!(parse_since(Some(&id)).unwrap(), Since::Id(id.clone()));
        assert!(parse_since(Some("yesterday")).is_err());
    }
}
