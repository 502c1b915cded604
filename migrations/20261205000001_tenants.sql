-- Tenants (interface.md §8): one relay shared by many customers.
-- Every existing row moves into the tenant `default` unchanged: users,
-- devices, push claims, calls, queued callbacks and callback URLs. Apps
-- that exist stay usable by every tenant (shared: an operator made them),
-- and API keys that exist stay operator keys (no tenant), so a
-- single-customer deployment sees no difference.

CREATE TABLE tenants (
    tenant_id        TEXT PRIMARY KEY,
    -- Overrides of the global limits; NULL: the global one.
    devices_per_user BIGINT,
    calls_per_second BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
INSERT INTO tenants (tenant_id, devices_per_user, calls_per_second, created_at, updated_at) VALUES ('default', NULL, NULL, 0, 0);

-- A SIP domain (lower case) belongs to at most one tenant.
CREATE TABLE tenant_domains (
    domain    TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE
);
CREATE INDEX tenant_domains_by_tenant ON tenant_domains (tenant_id);

-- Users are (tenant, user id). Portable rebuilds: SQLite cannot change a
-- primary key in place.
CREATE TABLE users_v2 (
    tenant_id     TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    password_hash TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
INSERT INTO users_v2 (tenant_id, user_id, password_hash, created_at, updated_at)
    SELECT 'default', user_id, password_hash, created_at, updated_at FROM users;

-- The channel CHECK also admits the providers of interface.md §9, so adding
-- them needs no second rebuild of this table.
CREATE TABLE devices_v2 (
    tenant_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    device_pkid     TEXT NOT NULL,
    dialect         TEXT NOT NULL,
    channel         TEXT NOT NULL CHECK (channel IN ('APNS', 'APNS:dev', 'FCM', 'HMS', 'WEBPUSH')),
    token           TEXT NOT NULL,
    push_key        TEXT,
    app_id          TEXT NOT NULL,
    payload_version TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    msg_token       TEXT,
    msg_channel     TEXT,
    msg_app_id      TEXT,
    sip_aor         TEXT,
    sip_contact     TEXT,
    sip_format      TEXT,
    sip_purr        TEXT,
    spark_email     TEXT,
    PRIMARY KEY (tenant_id, user_id, device_pkid),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users_v2 (tenant_id, user_id) ON DELETE CASCADE
);
INSERT INTO devices_v2 (tenant_id, user_id, device_pkid, dialect, channel, token, push_key, app_id, payload_version, created_at, updated_at,
                        msg_token, msg_channel, msg_app_id, sip_aor, sip_contact, sip_format, sip_purr, spark_email)
    SELECT 'default', user_id, device_pkid, dialect, channel, token, push_key, app_id, payload_version, created_at, updated_at,
           msg_token, msg_channel, msg_app_id, sip_aor, sip_contact, sip_format, sip_purr, spark_email FROM devices;
DROP TABLE devices;
DROP TABLE users;
ALTER TABLE users_v2 RENAME TO users;
ALTER TABLE devices_v2 RENAME TO devices;
CREATE INDEX devices_by_token ON devices (token);
CREATE INDEX devices_by_aor ON devices (tenant_id, sip_aor);
CREATE INDEX devices_by_spark_email ON devices (tenant_id, spark_email);
CREATE INDEX devices_by_updated ON devices (updated_at);

CREATE TABLE push_claims_v2 (
    tenant_id   TEXT NOT NULL,
    push_id     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    device_pkid TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    delivery    TEXT,
    PRIMARY KEY (push_id, tenant_id, user_id, device_pkid)
);
INSERT INTO push_claims_v2 (tenant_id, push_id, user_id, device_pkid, call_id, expires_at, delivery)
    SELECT 'default', push_id, user_id, device_pkid, call_id, expires_at, delivery FROM push_claims;
DROP TABLE push_claims;
ALTER TABLE push_claims_v2 RENAME TO push_claims;
CREATE INDEX push_claims_by_expiry ON push_claims (expires_at);

-- No index of its own: a tenant's recent calls are read along calls_by_created
-- (a LIMIT-bounded console page), and a call is written with one index less.
ALTER TABLE calls ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default';

-- NULL: an operator key (acts on any tenant).
ALTER TABLE api_keys ADD COLUMN tenant_id TEXT;

-- NULL: a shared app (any tenant's devices may use it).
ALTER TABLE apps ADD COLUMN owner_tenant TEXT;

ALTER TABLE callback_outbox ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default';

-- Callback URLs are per tenant and app: a tenant's callback receives only
-- its own devices' lines. The sealed secret moves as it is (its envelope
-- context for the tenant `default` is the one it was sealed with).
CREATE TABLE app_callbacks (
    tenant_id  TEXT NOT NULL,
    app_id     TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
    summary    TEXT NOT NULL,
    secret     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, app_id)
);
INSERT INTO app_callbacks (tenant_id, app_id, summary, secret, updated_at)
    SELECT 'default', app_id, summary, secret, updated_at FROM app_credentials WHERE provider = 'callback';
DELETE FROM app_credentials WHERE provider = 'callback';

-- Console sessions remember the key (or the admin token's fingerprint)
-- that signed them in, and are checked against it on every request. Older
-- sessions cannot be checked: they end (sign in again).
DROP TABLE console_sessions;
CREATE TABLE console_sessions (
    id_hash    TEXT PRIMARY KEY,
    csrf       TEXT NOT NULL,
    key_id     TEXT,
    admin_fp   TEXT,
    expires_at BIGINT NOT NULL
);
