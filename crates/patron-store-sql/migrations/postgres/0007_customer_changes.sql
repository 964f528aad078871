-- Which customers each commit of the active generation changed, so that API replicas can keep
-- customers cached and drop exactly the changed ones (see patron_api::cache).
--
-- Ids come from projection_active.changes_head, which every commit of the active generation
-- advances while it holds that row locked: ids are gapless and become visible in commit order,
-- so a reader that finds a hole knows rows were pruned and drops its whole cache.
ALTER TABLE projection_active ADD COLUMN changes_head bigint NOT NULL DEFAULT 0;

CREATE TABLE customer_changes (
    id           bigint  PRIMARY KEY,
    generation   bigint  NOT NULL,
    -- The generation's checkpoint after the commit.
    position     bigint  NOT NULL,
    -- The customers the commit wrote; NULL when there were too many to list (readers then drop
    -- everything).
    customer_ids text[]
);
