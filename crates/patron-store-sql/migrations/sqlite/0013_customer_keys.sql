-- Per-customer data keys for personal data in the event store, each stored only wrapped
-- (encrypted) under the master key (see patron_store_sql's sealing module). Deleting a row is the
-- erasure of everything sealed under it: `erasure_requested` does so in its own transaction (the
-- store opens SQLite with secure_delete, so deleted rows are overwritten, not left in free pages).
-- `master_key_id` is the master key's public fingerprint, to tell a wrong key from bad data.
CREATE TABLE customer_keys (
    customer_id   TEXT PRIMARY KEY,
    wrapped_key   BLOB NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
