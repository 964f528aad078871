-- A digest of each event's content, so that an event id re-used for different content is told
-- apart from a redelivery (see patron_domain::EventDigest for the canonical encoding: SHA-256
-- over id, customer, event time, source, type and stored payload), as 64 lowercase hex digits.
--
-- NULL for events stored before this migration: they are treated as equal to any content under
-- their id, which keeps redelivering them an idempotent no-op.
ALTER TABLE events ADD COLUMN payload_digest TEXT CHECK (length(payload_digest) = 64);
