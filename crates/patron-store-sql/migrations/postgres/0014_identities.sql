-- Identity resolution (see patron_store_sql's identity module).
--
-- `identities`: which customer holds each identifier (email, phone, device id, WeChat ids,
-- loyalty card…), found by kind and a digest of the normalized value — keyed (HMAC) under the
-- master key when there is one — never by the value itself. The holder is the stream whose
-- `identities_linked` event claimed it first (or the provisional customer an event naming only
-- the identifier created); `position` is the claiming event (NULL for a provisional claim).
CREATE TABLE identities (
    kind        TEXT   NOT NULL,
    digest      TEXT   NOT NULL,
    customer_id TEXT   NOT NULL,
    position    BIGINT,
    PRIMARY KEY (kind, digest)
);
CREATE INDEX identities_by_customer ON identities (customer_id);

-- Merges in force: `merged_id` was merged into `into_id` by the customers_merged event at
-- `position`. A cluster's root is the customer reached by following merged → into.
CREATE TABLE customer_merges (
    merged_id TEXT   PRIMARY KEY,
    into_id   TEXT   NOT NULL,
    position  BIGINT NOT NULL
);
CREATE INDEX customer_merges_by_into ON customer_merges (into_id);

-- Pairs split by a customers_unmerged event (a < b): identifiers linking them again do not merge
-- them again.
CREATE TABLE merge_blocks (
    a        TEXT   NOT NULL,
    b        TEXT   NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (a, b)
);

-- Read models: a customer merged into another points to it (NULL for everyone else); lists and
-- KPIs leave merged customers out, since the customer they were merged into counts them.
ALTER TABLE customers ADD COLUMN merged_into TEXT;
