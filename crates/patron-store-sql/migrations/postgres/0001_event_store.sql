-- The event store: one global log, one stream per customer, source offsets beside the events.

-- The commit fence. Every append locks this one row first and sets the new head before it
-- commits, so appends commit one after another in position order: positions are gapless, and a
-- reader that has seen position P can never later find a smaller position appearing.
CREATE TABLE event_log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint  NOT NULL CHECK (position >= 0)
);
INSERT INTO event_log_head (singleton, position) VALUES (true, 0);

CREATE TABLE events (
    position    bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    customer_id text        NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    event_type  text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    source      text        NOT NULL,
    payload     jsonb       NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (position),
    -- Idempotency: an event id is stored once.
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- Optimistic concurrency: one event per stream version.
    CONSTRAINT events_stream_version_key UNIQUE (customer_id, version)
);

-- How far each consumer (e.g. a Kafka consumer group) has read each partition; written in the
-- same transaction as the events that came from there.
CREATE TABLE source_offsets (
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL CHECK (partition >= 0),
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);
