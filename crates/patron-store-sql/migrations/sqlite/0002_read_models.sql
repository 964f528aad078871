-- Read models, written only by the projector: each batch of changes and its checkpoint commit in
-- one transaction (SQLite has one writer at a time, so commits are serialised by BEGIN IMMEDIATE).
-- Every row belongs to a generation; queries read the active one.

CREATE TABLE projection_generations (
    generation INTEGER PRIMARY KEY,
    rules      TEXT NOT NULL,
    -- building (a rebuild is filling it), active (queries read it) or retired (replaced).
    status     TEXT NOT NULL CHECK (status IN ('building', 'active', 'retired')),
    checkpoint INTEGER NOT NULL DEFAULT 0 CHECK (checkpoint >= 0),
    watermark  TEXT,
    scored_at  TEXT,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
);

-- The one active generation, and the last outbox id: locked by every commit of the active
-- generation, so outbox ids are assigned (and become visible) in commit order.
CREATE TABLE projection_active (
    singleton   INTEGER PRIMARY KEY DEFAULT 1 CHECK (singleton = 1),
    generation  INTEGER NOT NULL REFERENCES projection_generations (generation),
    outbox_head INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE customers (
    generation          INTEGER NOT NULL,
    customer_id         TEXT NOT NULL,
    stage               text,
    stage_since         TEXT,
    orders              INTEGER NOT NULL,
    refunds             INTEGER NOT NULL,
    gross_revenue_minor INTEGER NOT NULL,
    refunded_minor      INTEGER NOT NULL,
    net_revenue_minor   INTEGER NOT NULL,
    average_order_minor INTEGER,
    first_purchase_at   TEXT,
    last_purchase_at    TEXT,
    last_event_at       TEXT,
    rfm_r               INTEGER ,
    rfm_f               INTEGER ,
    rfm_m               INTEGER ,
    rfm_segment         text,
    tier                text,
    -- The projector's whole view of the customer, to resume from.
    state               TEXT NOT NULL,
    PRIMARY KEY (generation, customer_id)
);
CREATE INDEX customers_by_stage ON customers (generation, stage, customer_id);
CREATE INDEX customers_by_tier ON customers (generation, tier, customer_id);
CREATE INDEX customers_by_segment ON customers (generation, rfm_segment, customer_id);

-- One row per transition; a stage is exited when the next row is entered.
CREATE TABLE stage_history (
    generation  INTEGER NOT NULL,
    customer_id TEXT NOT NULL,
    seq         INTEGER     NOT NULL CHECK (seq >= 0),
    from_stage  text,
    to_stage    TEXT NOT NULL,
    entered_at  TEXT    NOT NULL,
    rule        TEXT NOT NULL,
    facts       TEXT NOT NULL,
    position    INTEGER NOT NULL,
    PRIMARY KEY (generation, customer_id, seq)
);

-- Population KPIs as counters (see patron_projector::kpi for each metric's period and dims).
CREATE TABLE kpis (
    generation INTEGER NOT NULL,
    metric     TEXT   NOT NULL,
    period     TEXT   NOT NULL,
    dim1       TEXT   NOT NULL,
    dim2       TEXT   NOT NULL,
    value      INTEGER NOT NULL,
    PRIMARY KEY (generation, metric, period, dim1, dim2)
);

-- Lifecycle transitions to publish, in commit order. Kept after publishing: watchers resume
-- from an id, and the dedupe key stops a replay from publishing a transition twice.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    dedupe_key  TEXT NOT NULL UNIQUE,
    customer_id TEXT NOT NULL,
    seq         INTEGER     NOT NULL,
    from_stage  text,
    to_stage    TEXT NOT NULL,
    occurred_at TEXT    NOT NULL,
    rule        TEXT NOT NULL,
    facts       TEXT NOT NULL,
    position    INTEGER NOT NULL,
    created_at  TEXT    NOT NULL
);

-- How far each relay has published the outbox.
CREATE TABLE relay_offsets (
    relay      TEXT PRIMARY KEY,
    last_id    INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
);
