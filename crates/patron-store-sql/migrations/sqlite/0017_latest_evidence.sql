-- The latest evidence of time a generation has seen (the greatest event time, each capped at its
-- commit). The watermark is this less the allowed lateness, unless source partitions read behind
-- their end hold it back: then it cannot be derived from the watermark, so it is kept.
ALTER TABLE projection_generations ADD COLUMN latest_evidence TEXT;
