-- A duplicate call that waits on another call's push claim marks the claim,
-- so the node that settles it tells the other nodes (PostgreSQL NOTIFY)
-- only about claims someone waits on, not about every call.
ALTER TABLE push_claims ADD COLUMN waited INTEGER NOT NULL DEFAULT 0;
