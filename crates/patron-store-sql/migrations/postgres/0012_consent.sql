-- Consent per purpose. `customers.consented` lists the purposes a customer granted as ' a b '
-- (each purpose followed by a space, the whole preceded by one; NULL when none), so an audience
-- query finds a purpose exactly with ' ' || purpose || ' '; `customers.consents` holds every
-- answer, a JSON object purpose -> {"granted", "at"} (NULL when none). `outbox.consent` holds, with every
-- transition, the customer's answers when it fired: a JSON object purpose -> granted (NULL when
-- none). A generation projected before this migration has no consent in it: `patron rebuild`
-- fills it from the log.
ALTER TABLE customers ADD COLUMN consented text;
ALTER TABLE customers ADD COLUMN consents text;
ALTER TABLE outbox ADD COLUMN consent text;
