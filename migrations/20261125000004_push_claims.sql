-- One push per (pushid, device) within the ring window, even when the same
-- call event reaches two relay nodes: the first INSERT wins, an expired
-- claim may be taken over.
CREATE TABLE push_claims (
    push_id     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    device_pkid TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    -- The claim holder's outcome for this device (JSON), once known: what a
    -- duplicate call reports instead of pushing again.
    delivery    TEXT,
    PRIMARY KEY (push_id, user_id, device_pkid)
);
CREATE INDEX push_claims_by_expiry ON push_claims (expires_at);
