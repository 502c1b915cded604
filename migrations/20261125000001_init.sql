-- pushrelay schema. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Times are epoch milliseconds (BIGINT). Secrets are AES-256-GCM envelopes
-- under the master key (TEXT), never plaintext.

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE apps (
    app_id     TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE app_credentials (
    app_id     TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
    provider   TEXT NOT NULL CHECK (provider IN ('apns', 'fcm', 'webex')),
    summary    TEXT NOT NULL,
    secret     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, provider)
);

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    password_hash TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id         TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    device_pkid     TEXT NOT NULL,
    dialect         TEXT NOT NULL,
    channel         TEXT NOT NULL CHECK (channel IN ('APNS', 'APNS:dev', 'FCM')),
    token           TEXT NOT NULL,
    push_key        TEXT,
    app_id          TEXT NOT NULL,
    payload_version TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_pkid)
);

CREATE INDEX devices_by_token ON devices (token);

CREATE TABLE calls (
    call_id      TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    push_id      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    ring_ends_at BIGINT NOT NULL,
    report       TEXT NOT NULL
);

CREATE INDEX calls_by_created ON calls (created_at);
