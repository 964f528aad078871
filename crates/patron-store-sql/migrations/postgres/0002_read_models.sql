-- Read models, written only by the projector: each batch of changes and its checkpoint commit in
-- one transaction. Every row belongs to a generation; queries read the active one. A rebuild
-- fills a new generation beside it and switches `projection_active` in one transaction.

CREATE TABLE projection_generations (
    generation bigint      PRIMARY KEY,
    rules      text        NOT NULL,
    -- building (a rebuild is filling it), active (queries read it) or retired (replaced).
    status     text        NOT NULL CHECK (status IN ('building', 'active', 'retired')),
    checkpoint bigint      NOT NULL DEFAULT 0 CHECK (checkpoint >= 0),
    watermark  timestamptz,
    scored_at  timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The one active generation, and the last outbox id: locked by every commit of the active
-- generation, so outbox ids are assigned (and become visible) in commit order.
CREATE TABLE projection_active (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation  bigint  NOT NULL REFERENCES projection_generations (generation),
    outbox_head bigint  NOT NULL DEFAULT 0
);

CREATE TABLE customers (
    generation          bigint      NOT NULL,
    customer_id         text        NOT NULL,
    stage               text,
    stage_since         timestamptz,
    orders              bigint      NOT NULL,
    refunds             bigint      NOT NULL,
    gross_revenue_minor bigint      NOT NULL,
    refunded_minor      bigint      NOT NULL,
    net_revenue_minor   bigint      NOT NULL,
    average_order_minor bigint,
    first_purchase_at   timestamptz,
    last_purchase_at    timestamptz,
    last_event_at       timestamptz,
    rfm_r               smallint,
    rfm_f               smallint,
    rfm_m               smallint,
    rfm_segment         text,
    tier                text,
    -- The projector's whole view of the customer, to resume from.
    state               text        NOT NULL,
    PRIMARY KEY (generation, customer_id)
);
CREATE INDEX customers_by_stage ON customers (generation, stage, customer_id);
CREATE INDEX customers_by_tier ON customers (generation, tier, customer_id);
CREATE INDEX customers_by_segment ON customers (generation, rfm_segment, customer_id);

-- One row per transition; a stage is exited when the next row is entered.
CREATE TABLE stage_history (
    generation  bigint      NOT NULL,
    customer_id text        NOT NULL,
    seq         integer     NOT NULL CHECK (seq >= 0),
    from_stage  text,
    to_stage    text        NOT NULL,
    entered_at  timestamptz NOT NULL,
    rule        text        NOT NULL,
    facts       jsonb       NOT NULL,
    position    bigint      NOT NULL,
    PRIMARY KEY (generation, customer_id, seq)
);

-- Population KPIs as counters (see patron_projector::kpi for each metric's period and dims).
CREATE TABLE kpis (
    generation bigint NOT NULL,
    metric     text   NOT NULL,
    period     text   NOT NULL,
    dim1       text   NOT NULL,
    dim2       text   NOT NULL,
    value      bigint NOT NULL,
    PRIMARY KEY (generation, metric, period, dim1, dim2)
);

-- Lifecycle transitions to publish, in commit order. Kept after publishing: watchers resume
-- from an id, and the dedupe key stops a replay from publishing a transition twice.
CREATE TABLE outbox (
    id          bigint      PRIMARY KEY,
    dedupe_key  text        NOT NULL UNIQUE,
    customer_id text        NOT NULL,
    seq         integer     NOT NULL,
    from_stage  text,
    to_stage    text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    rule        text        NOT NULL,
    facts       jsonb       NOT NULL,
    position    bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- How far each relay has published the outbox.
CREATE TABLE relay_offsets (
    relay      text        PRIMARY KEY,
    last_id    bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
