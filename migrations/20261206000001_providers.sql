-- More providers (interface.md §9): Huawei Push Kit and Web Push.
-- A Web Push subscription's keys (p256dh and the auth secret) are sealed
-- under the master key like a device's JWE key.
ALTER TABLE devices ADD COLUMN channel_secret TEXT;

-- Credentials of the new providers: the provider CHECK gains them. A
-- portable rebuild (SQLite cannot alter a CHECK constraint).
CREATE TABLE app_credentials_v3 (
    app_id     TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
    provider   TEXT NOT NULL CHECK (provider IN ('apns', 'fcm', 'hms', 'webpush', 'webex', 'callback')),
    summary    TEXT NOT NULL,
    secret     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    lookup_key TEXT,
    PRIMARY KEY (app_id, provider)
);
INSERT INTO app_credentials_v3 (app_id, provider, summary, secret, updated_at, lookup_key)
    SELECT app_id, provider, summary, secret, updated_at, lookup_key FROM app_credentials;
DROP TABLE app_credentials;
ALTER TABLE app_credentials_v3 RENAME TO app_credentials;
CREATE INDEX credentials_by_lookup ON app_credentials (provider, lookup_key);
