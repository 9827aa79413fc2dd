-- Privacy: the consent ledger, erasures and retention.
--
-- `consent_log` keeps every change of a lead's consent (mail and tracking) with its
-- time and source. Triggers write it in the transaction of the change, whatever
-- wrote the lead (events, links, the API), so no write path can forget it.
--
-- An erased lead stays as a tombstone row without personal data (`erased_at` set,
-- the address replaced) so reports keep counting it; `first_source` keeps the part of
-- its first event the funnel report reads for the lead's channel once raw events are
-- gone (erased, or deleted by retention). `erased_addresses` holds a keyed hash
-- (HMAC-SHA256) of each erased address, so a re-import gets no marketing mail without
-- new consent; `erasures` records each erasure (when, by whom, why, rows removed).

ALTER TABLE leads ADD COLUMN erased_at INTEGER;
ALTER TABLE leads ADD COLUMN first_source TEXT;

CREATE TABLE consent_log (
    id      INTEGER PRIMARY KEY,
    lead_id INTEGER NOT NULL REFERENCES leads (id),
    kind    TEXT    NOT NULL CHECK (kind IN ('email', 'tracking')),
    granted INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    source  TEXT
);
CREATE INDEX consent_log_lead ON consent_log (lead_id, id);

-- A lead is created without consent (intake writes only its address), so changes
-- are updates.
CREATE TRIGGER consent_log_update_email
AFTER UPDATE OF consent_email, consent_email_at, consent_email_source ON leads
WHEN NEW.erased_at IS NULL AND (NEW.consent_email IS NOT OLD.consent_email
    OR NEW.consent_email_at IS NOT OLD.consent_email_at
    OR NEW.consent_email_source IS NOT OLD.consent_email_source)
BEGIN
    INSERT INTO consent_log (lead_id, kind, granted, at, source)
    VALUES (NEW.id, 'email', NEW.consent_email, COALESCE(NEW.consent_email_at, NEW.updated_at),
            NEW.consent_email_source);
END;

CREATE TRIGGER consent_log_update_tracking
AFTER UPDATE OF consent_tracking, consent_tracking_at, consent_tracking_source ON leads
WHEN NEW.erased_at IS NULL AND (NEW.consent_tracking IS NOT OLD.consent_tracking
    OR NEW.consent_tracking_at IS NOT OLD.consent_tracking_at
    OR NEW.consent_tracking_source IS NOT OLD.consent_tracking_source)
BEGIN
    INSERT INTO consent_log (lead_id, kind, granted, at, source)
    VALUES (NEW.id, 'tracking', NEW.consent_tracking,
            COALESCE(NEW.consent_tracking_at, NEW.updated_at), NEW.consent_tracking_source);
END;

-- The consent each lead holds now, as the first entry of its ledger.
INSERT INTO consent_log (lead_id, kind, granted, at, source)
SELECT id, 'email', consent_email, COALESCE(consent_email_at, updated_at), consent_email_source
FROM leads WHERE consent_email_at IS NOT NULL OR consent_email <> 0;
INSERT INTO consent_log (lead_id, kind, granted, at, source)
SELECT id, 'tracking', consent_tracking, COALESCE(consent_tracking_at, updated_at),
       consent_tracking_source
FROM leads WHERE consent_tracking_at IS NOT NULL OR consent_tracking <> 0;

CREATE TABLE erased_addresses (
    hash      TEXT    PRIMARY KEY,   -- hex HMAC-SHA256 of the lower-cased address
    erased_at INTEGER NOT NULL       -- the latest erasure of the address
);

CREATE TABLE erasures (
    id      INTEGER PRIMARY KEY,
    lead_id INTEGER NOT NULL,        -- the tombstone left in `leads`
    at      INTEGER NOT NULL,
    by_name TEXT    NOT NULL,
    reason  TEXT    NOT NULL,
    removed TEXT    NOT NULL DEFAULT '{}'   -- JSON: table -> rows removed or cleared
);

-- Runs of the retention job.
CREATE TABLE retention_runs (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    events      INTEGER NOT NULL DEFAULT 0,
    mail_bodies INTEGER NOT NULL DEFAULT 0
);
