-- More registration dialects (Spark, Acrobits, SIP): a second token for
-- alerts, the SIP binding, and a lookup key on credentials (APNs bundle id,
-- FCM project id) so push data naming a bundle/project finds its app.
ALTER TABLE devices ADD COLUMN msg_token TEXT;
ALTER TABLE devices ADD COLUMN msg_channel TEXT;
ALTER TABLE devices ADD COLUMN msg_app_id TEXT;
ALTER TABLE devices ADD COLUMN sip_aor TEXT;
ALTER TABLE devices ADD COLUMN sip_contact TEXT;
ALTER TABLE devices ADD COLUMN sip_format TEXT;
ALTER TABLE devices ADD COLUMN sip_purr TEXT;
ALTER TABLE app_credentials ADD COLUMN lookup_key TEXT;
CREATE INDEX devices_by_aor ON devices (sip_aor);
CREATE INDEX credentials_by_lookup ON app_credentials (provider, lookup_key);
