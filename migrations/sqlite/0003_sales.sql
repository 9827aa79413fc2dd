-- no-transaction
-- Sales handoff: handoffs with owner, deadline and escalation state, their log, and
-- the webhook outbox. The mail outbox learns internal mail (notifications to sales,
-- sent to a recipient other than the lead). Instants are Unix milliseconds (UTC).
--
-- SQLite cannot change a CHECK constraint in place, so the outbox is copied into a
-- new table; foreign keys are off meanwhile and the copy is one transaction.

PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE outbox_v3 (
    id            INTEGER PRIMARY KEY,
    idem_key      TEXT    NOT NULL UNIQUE,
    lead_id       INTEGER NOT NULL REFERENCES leads (id),
    recipient     TEXT,                      -- internal mail: who gets it (NULL: the lead)
    template      TEXT    NOT NULL,
    class         TEXT    NOT NULL CHECK (class IN ('marketing', 'transactional', 'internal')),
    kind          TEXT    NOT NULL CHECK (kind IN ('trigger', 'stream', 'optin', 'handoff')),
    dedupe_key    TEXT,
    enrollment_id INTEGER,
    step          INTEGER,
    data          TEXT    NOT NULL DEFAULT '{}',
    source        TEXT    NOT NULL,
    event_seq     INTEGER,
    status        TEXT    NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'suppressed')),
    reason        TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    tries         INTEGER NOT NULL DEFAULT 0,
    first_try_at  INTEGER,
    created_at    INTEGER NOT NULL,
    due_at        INTEGER NOT NULL,
    claimed_by    TEXT,
    finished_at   INTEGER,
    message_id    TEXT
);
INSERT INTO outbox_v3 (id, idem_key, lead_id, template, class, kind, dedupe_key,
    enrollment_id, step, data, source, event_seq, status, reason, attempts, tries,
    first_try_at, created_at, due_at, claimed_by, finished_at, message_id)
SELECT id, idem_key, lead_id, template, class, kind, dedupe_key, enrollment_id, step,
    data, source, event_seq, status, reason, attempts, tries, first_try_at, created_at,
    due_at, claimed_by, finished_at, message_id
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v3 RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (due_at) WHERE status = 'queued';
CREATE INDEX outbox_sending ON outbox (id) WHERE status = 'sending';
CREATE INDEX outbox_dedupe ON outbox (lead_id, template, dedupe_key, created_at)
    WHERE dedupe_key IS NOT NULL;
CREATE INDEX outbox_marketing_sent ON outbox (lead_id, finished_at)
    WHERE status = 'sent' AND class = 'marketing';
CREATE INDEX outbox_lead ON outbox (lead_id, id);

-- A lead handed to sales. `new` rows were asked for (by a rule or a stage) in the
-- transaction of that change and wait for an owner; then the handoff is `open` until
-- sales answers, `escalated` once the escalation contact was told, and ends
-- `accepted`, `rejected` or `expired` (returned to marketing after nobody answered).
CREATE TABLE handoffs (
    id           INTEGER PRIMARY KEY,
    lead_id      INTEGER NOT NULL REFERENCES leads (id),
    team         TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    source       TEXT    NOT NULL,     -- rules/40-funnel.rhai:12, stage:mql, api:crm
    event_seq    INTEGER,
    state        TEXT    NOT NULL DEFAULT 'new'
                 CHECK (state IN ('new', 'open', 'escalated', 'accepted', 'rejected', 'expired')),
    owner        TEXT,                 -- owner id from [[sales.owners]]
    owners_had   TEXT    NOT NULL DEFAULT '[]',  -- JSON: owners it was assigned to, in order
    round        INTEGER NOT NULL DEFAULT 0,     -- +1 per assignment; older links stop working
    duplicates   TEXT    NOT NULL DEFAULT '[]',  -- JSON: leads of the same company with sales
    created_at   INTEGER NOT NULL,
    assigned_at  INTEGER,              -- start of the current owner's clock
    due_at       INTEGER,              -- the current owner's deadline
    step         INTEGER NOT NULL DEFAULT 0,     -- next escalation step
    next_at      INTEGER,              -- when that step is due
    breached_at  INTEGER,              -- first deadline missed
    answered_at  INTEGER,
    answered_by  TEXT,
    answer_note  TEXT,                 -- the reason of a rejection
    business_ms  INTEGER,              -- business time from handoff to answer
    hook_pending TEXT,                 -- a webhook event the desk still has to queue
    updated_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX handoffs_one_open ON handoffs (lead_id)
    WHERE state IN ('new', 'open', 'escalated');
CREATE INDEX handoffs_new ON handoffs (id) WHERE state = 'new';
CREATE INDEX handoffs_next ON handoffs (next_at) WHERE state IN ('open', 'escalated');
CREATE INDEX handoffs_lead ON handoffs (lead_id, id);
CREATE INDEX handoffs_created ON handoffs (created_at);
CREATE INDEX handoffs_hook_pending ON handoffs (id) WHERE hook_pending IS NOT NULL;

-- What happened to a handoff: created, assigned, reminded, escalated, breached,
-- reassigned, accepted, rejected, expired.
CREATE TABLE handoff_log (
    id         INTEGER PRIMARY KEY,
    handoff_id INTEGER NOT NULL REFERENCES handoffs (id),
    at         INTEGER NOT NULL,
    what       TEXT    NOT NULL,
    owner      TEXT,
    detail     TEXT
);
CREATE INDEX handoff_log_handoff ON handoff_log (handoff_id, id);
CREATE INDEX handoff_log_what ON handoff_log (what, at);

-- Webhook calls, written in the transaction of the handoff step that causes them and
-- delivered with retries like mail. The URL and secret are read from the
-- configuration at send time (the secret is never stored).
CREATE TABLE webhooks (
    id           INTEGER PRIMARY KEY,
    idem_key     TEXT    NOT NULL UNIQUE,
    handoff_id   INTEGER NOT NULL REFERENCES handoffs (id),
    team         TEXT    NOT NULL,
    event        TEXT    NOT NULL,     -- handoff.assigned, handoff.escalated, ...
    body         TEXT    NOT NULL,     -- JSON as sent
    status       TEXT    NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
    reason       TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    first_try_at INTEGER,
    created_at   INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    claimed_by   TEXT,
    finished_at  INTEGER
);
CREATE INDEX webhooks_due ON webhooks (due_at) WHERE status = 'queued';

COMMIT;
PRAGMA foreign_keys = ON;
