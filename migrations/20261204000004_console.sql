-- The operator console (interface.md §7), cheap on every node:
-- calls carry their outcomes and apps for filtering (",delivered,failed,"),
-- provider requests are summed per minute by every node (latency buckets
-- in ms: ≤1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, more),
-- and console sign-ins are sessions in the store.
ALTER TABLE calls ADD COLUMN outcomes TEXT;
ALTER TABLE calls ADD COLUMN app_ids TEXT;

CREATE TABLE provider_minutes (
    minute   BIGINT NOT NULL,
    provider TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors   BIGINT NOT NULL,
    b0 BIGINT NOT NULL, b1 BIGINT NOT NULL, b2 BIGINT NOT NULL, b3 BIGINT NOT NULL,
    b4 BIGINT NOT NULL, b5 BIGINT NOT NULL, b6 BIGINT NOT NULL, b7 BIGINT NOT NULL,
    b8 BIGINT NOT NULL, b9 BIGINT NOT NULL, b10 BIGINT NOT NULL, b11 BIGINT NOT NULL,
    b12 BIGINT NOT NULL,
    PRIMARY KEY (minute, provider)
);

CREATE TABLE console_sessions (
    id_hash    TEXT PRIMARY KEY,
    csrf       TEXT NOT NULL,
    who        TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX devices_by_updated ON devices (updated_at);
