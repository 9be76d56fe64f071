-- Delivery: users' destinations, the per-destination outbox, delivery records, reply
-- addresses, private feeds, and encrypted secrets of sources. Times are ms since the epoch.

-- A user's named destinations (owned by the user avatar). `config` is the destination's
-- JSON, credentials included, sealed with the data dir's key; the API shows a redacted copy.
CREATE TABLE destinations (
    id                TEXT PRIMARY KEY,     -- dst_<id>
    user_id           INTEGER NOT NULL,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL,        -- webhook, mailto, twilio, ntfy, slack, discord, matrix, xmpp
    config            BLOB NOT NULL,        -- sealed JSON
    options           TEXT NOT NULL DEFAULT '{}', -- JSON: min_priority, enabled, ...
    verified_at       INTEGER,              -- NULL until the code sent to it was entered
    verify_hash       TEXT,                 -- SHA-256 of the pending verification code
    verify_expires_at INTEGER,
    verify_attempts   INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    UNIQUE (user_id, name)
);
CREATE INDEX destinations_user ON destinations(user_id);

-- What waits for each destination, in order. A row leaves when delivered or dead-lettered;
-- a dead destination's backlog stays here, on disk.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    destination_id  TEXT NOT NULL,
    user_id         INTEGER NOT NULL,
    notification_id TEXT NOT NULL,
    payload         TEXT NOT NULL,          -- JSON: what to send
    enqueued_at     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (destination_id, notification_id)
);
CREATE INDEX outbox_destination ON outbox(destination_id, seq);

-- The delivery record of a notification for a user: one row per destination, every
-- attempt kept (JSON array of {at, ok, status, error}).
CREATE TABLE deliveries (
    notification_id TEXT NOT NULL,
    user_id         INTEGER NOT NULL,
    destination_id  TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,          -- queued, retrying, delivered, dead
    reason          TEXT NOT NULL DEFAULT '', -- why it was sent there
    attempts        TEXT NOT NULL DEFAULT '[]',
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (notification_id, user_id, destination_id)
);
CREATE INDEX deliveries_destination ON deliveries(destination_id, updated_at);

-- Per-notification reply addresses of delivered mail (only the token's hash is kept).
CREATE TABLE reply_tokens (
    token_hash      TEXT PRIMARY KEY,
    user_id         INTEGER NOT NULL,
    notification_id TEXT NOT NULL,
    destination_id  TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX reply_tokens_notification ON reply_tokens(notification_id, user_id);

-- Private Atom feeds: `/feeds/<secret>.atom`. The secret is looked up by its hash and kept
-- sealed so its owner can see the URL again. scope '' is the whole history, else a
-- subscription id.
CREATE TABLE private_feeds (
    secret_hash TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL,
    scope       TEXT NOT NULL DEFAULT '',
    secret      BLOB NOT NULL,              -- sealed
    created_at  INTEGER NOT NULL,
    UNIQUE (user_id, scope)
);

-- Secrets of sources (an IMAP password), sealed with the data dir's key.
CREATE TABLE source_secrets (
    source_id  TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Where a mail source's notification came from, for relaying a user's reply to its sender.
-- Written by the mail source avatar.
CREATE TABLE mail_origins (
    notification_id TEXT PRIMARY KEY,
    source_id       TEXT NOT NULL,
    reply_address   TEXT NOT NULL,          -- Reply-To, else From (a bare address)
    message_id      TEXT,                   -- without angle brackets
    subject         TEXT NOT NULL DEFAULT ''
);

-- A user's settings (time zone, quiet hours), owned by the user avatar.
CREATE TABLE user_settings (
    user_id  INTEGER PRIMARY KEY,
    settings TEXT NOT NULL DEFAULT '{}'     -- JSON
);

-- Deliveries to destinations held during a user's quiet hours; released (or summed up in
-- one message per destination) when they end.
CREATE TABLE held (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER NOT NULL,
    destination_id  TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    body            TEXT NOT NULL,          -- JSON notification
    held_at         INTEGER NOT NULL,
    UNIQUE (destination_id, notification_id)
);
CREATE INDEX held_user ON held(user_id, seq);

-- Items waiting for a destination's next digest.
CREATE TABLE digest_items (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    destination_id  TEXT NOT NULL,
    user_id         INTEGER NOT NULL,
    notification_id TEXT NOT NULL,
    body            TEXT NOT NULL,          -- JSON notification
    added_at        INTEGER NOT NULL,
    UNIQUE (destination_id, notification_id)
);
CREATE INDEX digest_items_destination ON digest_items(destination_id, seq);

-- A user's routing rules (JSON), owned by the user avatar.
CREATE TABLE user_rules (
    user_id INTEGER PRIMARY KEY,
    rules   TEXT NOT NULL                   -- JSON
);

-- Escalations planned by a rule: sent when due unless the notification was acked first.
-- Each has a durable reminder `esc:<notification id>:<step>` on the user avatar.
CREATE TABLE escalations (
    user_id         INTEGER NOT NULL,
    notification_id TEXT NOT NULL,
    step            INTEGER NOT NULL,
    destination_id  TEXT NOT NULL,
    due_at          INTEGER NOT NULL,
    body            TEXT NOT NULL,          -- JSON notification
    PRIMARY KEY (user_id, notification_id, step)
);

-- Where a reply to a published notification goes: the publisher's `Reply-To-Url`.
CREATE TABLE reply_paths (
    notification_id TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
