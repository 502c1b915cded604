-- API keys with scopes (interface §5). Only the SHA-256 of a key is stored;
-- a revoked key keeps its row (revoked_at) for the audit trail.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    app_id     TEXT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
