-- Core schema: users and auth, topics, subscriptions, notifications and per-user history,
-- the durable ingest queue, avatar state, reminders and the append-only event archive.
-- Times are milliseconds since the Unix epoch.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,                      -- argon2 PHC string, NULL until a password is set
    is_admin      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

-- API tokens are random; only their SHA-256 is stored.
CREATE TABLE tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    label        TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL
);
CREATE INDEX tokens_user ON tokens(user_id);

-- One-time sign-in links and the web sessions they open (hashes only).
CREATE TABLE signin_codes (
    code_hash  TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE topics (
    name       TEXT PRIMARY KEY,
    owner_id   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE topic_grants (
    topic         TEXT NOT NULL,
    user_id       INTEGER NOT NULL,
    can_publish   INTEGER NOT NULL,
    can_subscribe INTEGER NOT NULL,
    PRIMARY KEY (topic, user_id)
);

-- Written by the user avatar that owns the subscription; read by source avatars on activation.
CREATE TABLE subscriptions (
    id         TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    source_id  TEXT NOT NULL,
    source     TEXT NOT NULL,               -- JSON: the source as the user gave it
    filter     TEXT NOT NULL,               -- JSON
    created_at INTEGER NOT NULL,
    UNIQUE (user_id, source_id)
);
CREATE INDEX subscriptions_source ON subscriptions(source_id);

-- One row per notification (the content, stored once however many users receive it).
-- Written by the source avatar; `id` is the dedupe key.
CREATE TABLE notifications (
    id        TEXT PRIMARY KEY,
    source_id TEXT NOT NULL,
    time      INTEGER NOT NULL,
    priority  INTEGER NOT NULL,
    body      TEXT NOT NULL                 -- JSON of the notification
);
CREATE INDEX notifications_source_time ON notifications(source_id, time);

-- A user's history: one row per (user, notification); written by the user avatar.
-- rowid is the cursor for pagination.
CREATE TABLE inbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER NOT NULL,
    notification_id TEXT NOT NULL,
    source_id       TEXT NOT NULL,
    time            INTEGER NOT NULL,
    priority        INTEGER NOT NULL,
    acked_at        INTEGER,
    UNIQUE (user_id, notification_id)
);
CREATE INDEX inbox_user_seq ON inbox(user_id, seq);

-- The durable ingest queue: an item stays here until its effects are durable.
CREATE TABLE ingest_queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    target      TEXT NOT NULL,              -- the avatar id it is for
    payload     TEXT NOT NULL,              -- JSON
    enqueued_at INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE dead_letters (
    seq         INTEGER PRIMARY KEY,
    target      TEXT NOT NULL,
    payload     TEXT NOT NULL,
    error       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    at          INTEGER NOT NULL
);

-- Write-behind state of avatars that keep more than their tables show.
CREATE TABLE avatar_state (
    avatar_id  TEXT PRIMARY KEY,
    state      TEXT NOT NULL,               -- JSON
    updated_at INTEGER NOT NULL
);

-- Durable reminders: each reactivates its avatar when due.
CREATE TABLE reminders (
    kind      TEXT NOT NULL,                -- avatar kind, e.g. 'user', 'source'
    avatar_id TEXT NOT NULL,
    name      TEXT NOT NULL,
    due_at    INTEGER NOT NULL,
    payload   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, avatar_id, name)
);
CREATE INDEX reminders_due ON reminders(kind, due_at);

-- The event archive: immutable, append-only, never read by user-facing paths.
CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    time            INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    user_id         INTEGER,
    source_id       TEXT,
    notification_id TEXT,
    data            TEXT NOT NULL DEFAULT '{}'
);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
