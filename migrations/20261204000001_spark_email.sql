-- Webex registrations keep the person's e-mail address (seeds/000's
-- `GET /register?email=` lookup). Lower case; NULL for other dialects.
ALTER TABLE devices ADD COLUMN spark_email TEXT;
CREATE INDEX devices_by_spark_email ON devices (spark_email);
