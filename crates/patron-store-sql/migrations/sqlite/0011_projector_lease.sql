-- The projector lease: the instance named here is the active projector of this database; others
-- stand by and take the lease over once it has expired (its holder died without letting go) or
-- has been deleted (its holder let go). The active instance pushes `expires_at` on well before it
-- passes. PostgreSQL needs no table: there the lease is a session advisory lock.
CREATE TABLE projector_lease (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    owner      TEXT NOT NULL,
    -- Unix time in milliseconds.
    expires_at INTEGER NOT NULL
);
