-- Webhook replay keys (interface.md §4): a signed envelope is acted on once
-- within 24 h, on any node. Pruned hourly.
CREATE TABLE webhook_events (
    app_id     TEXT NOT NULL,
    replay_key TEXT NOT NULL,
    seen_at    BIGINT NOT NULL,
    PRIMARY KEY (app_id, replay_key)
);
CREATE INDEX webhook_events_by_time ON webhook_events (seen_at);
