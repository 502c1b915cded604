-- Delivery callbacks (interface.md §7): final call reports waiting to be
-- POSTed to an app's callback URL. Written in the same transaction as the
-- report, deleted once the receiver answers 2xx or after 10 minutes of
-- retries, so a callback survives a restart (at least once). A node
-- leases a row (`leased_until`) while it posts it.
CREATE TABLE callback_outbox (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL,
    call_id      TEXT NOT NULL,
    body         TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    created_at   BIGINT NOT NULL,
    next_at      BIGINT NOT NULL,
    leased_until BIGINT NOT NULL
);
CREATE INDEX callback_outbox_due ON callback_outbox (next_at);

-- The callback URL and its sealed secret live with the app's other
-- credentials (kind `callback`, re-sealed by master key rotations like the
-- rest): the CHECK gains it. A portable rebuild (SQLite cannot alter a
-- CHECK constraint).
CREATE TABLE app_credentials_v2 (
    app_id     TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
    provider   TEXT NOT NULL CHECK (provider IN ('apns', 'fcm', 'webex', 'callback')),
    summary    TEXT NOT NULL,
    secret     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    lookup_key TEXT,
    PRIMARY KEY (app_id, provider)
);
INSERT INTO app_credentials_v2 (app_id, provider, summary, secret, updated_at, lookup_key)
    SELECT app_id, provider, summary, secret, updated_at, lookup_key FROM app_credentials;
DROP TABLE app_credentials;
ALTER TABLE app_credentials_v2 RENAME TO app_credentials;
CREATE INDEX credentials_by_lookup ON app_credentials (provider, lookup_key);
