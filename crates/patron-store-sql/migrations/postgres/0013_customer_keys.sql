-- Per-customer data keys for personal data in the event store, each stored only wrapped
-- (encrypted) under the master key (see patron_store_sql's sealing module). Deleting a row is the
-- erasure of everything sealed under it: `erasure_requested` does so in its own transaction.
-- `master_key_id` is the master key's public fingerprint, to tell a wrong key from bad data.
CREATE TABLE customer_keys (
    customer_id   text        PRIMARY KEY,
    wrapped_key   bytea       NOT NULL,
    master_key_id text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
