-- Relay leases: per relay name (the name its offset is stored under), the instance named here is
-- the one publishing; others stand by and take the lease over once it has expired (its holder
-- died without letting go) or has been deleted (its holder let go). PostgreSQL needs no table:
-- there each relay's lease is a session advisory lock.
CREATE TABLE relay_lease (
    relay      TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    -- Unix time in milliseconds.
    expires_at INTEGER NOT NULL
);
