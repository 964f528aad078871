-- The event store: one global log, one stream per customer, source offsets beside the events.
-- SQLite admits one writer at a time (appends use BEGIN IMMEDIATE), so positions assigned as
-- max(position) + 1 inside the write transaction are gapless and commit-ordered.

CREATE TABLE events (
    position    INTEGER NOT NULL PRIMARY KEY,
    event_id    TEXT    NOT NULL,
    customer_id TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    event_type  TEXT    NOT NULL,
    occurred_at TEXT    NOT NULL,
    recorded_at TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    -- Idempotency: an event id is stored once.
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- Optimistic concurrency: one event per stream version.
    CONSTRAINT events_stream_version_key UNIQUE (customer_id, version)
);

CREATE TABLE source_offsets (
    consumer    TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL CHECK (partition >= 0),
    next_offset INTEGER NOT NULL CHECK (next_offset >= 0),
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);
