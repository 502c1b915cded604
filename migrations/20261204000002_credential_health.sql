-- Credential health (interface.md §7): per app and provider, the last
-- success and the last refusal with the provider's reason, written by
-- whichever node saw it (at most about once a minute per app and provider,
-- and at once when the state changes).
CREATE TABLE credential_health (
    app_id          TEXT NOT NULL,
    provider        TEXT NOT NULL,
    last_success_at BIGINT,
    last_failure_at BIGINT,
    last_reason     TEXT,
    PRIMARY KEY (app_id, provider)
);
