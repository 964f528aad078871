-- A digest of each event's content, so that an event id re-used for different content is told
-- apart from a redelivery (see patron_domain::EventDigest for the canonical encoding: SHA-256
-- over id, customer, event time, source, type and stored payload).
--
-- NULL for events stored before this migration: they are treated as equal to any content under
-- their id, which keeps redelivering them an idempotent no-op. Adding a nullable column without
-- a default rewrites nothing; the length check is NOT VALID so that it checks new rows without
-- scanning the existing ones.
ALTER TABLE events ADD COLUMN payload_digest bytea;
ALTER TABLE events ADD CONSTRAINT events_payload_digest_len
    CHECK (octet_length(payload_digest) = 32) NOT VALID;
