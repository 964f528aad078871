-- Which customers each commit of the active generation changed, so that API replicas can keep
-- customers cached and drop exactly the changed ones (see patron_api::cache).
--
-- Ids come from projection_active.changes_head, advanced by every commit of the active
-- generation (SQLite commits one writer at a time): ids are gapless and in commit order, so a
-- reader that finds a hole knows rows were pruned and drops its whole cache.
ALTER TABLE projection_active ADD COLUMN changes_head INTEGER NOT NULL DEFAULT 0;

CREATE TABLE customer_changes (
    id           INTEGER PRIMARY KEY,
    generation   INTEGER NOT NULL,
    -- The generation's checkpoint after the commit.
    position     INTEGER NOT NULL,
    -- The customers the commit wrote, as a JSON array; NULL when there were too many to list
    -- (readers then drop everything).
    customer_ids TEXT
);
