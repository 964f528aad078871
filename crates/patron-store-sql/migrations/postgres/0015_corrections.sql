-- Corrections of published lifecycle records. A late event re-folds its customer in event-time
-- order; transitions that no longer hold are retracted: an outbox record whose `retracts` names
-- the dedupe key of the record it withdraws (its other columns repeat that record). `historical`
-- marks a record whose transition is older than the rules' `historical_after_days` at the commit
-- of the event that caused it (a backfill, not news).
ALTER TABLE outbox ADD COLUMN retracts text;
ALTER TABLE outbox ADD COLUMN historical boolean NOT NULL DEFAULT false;
