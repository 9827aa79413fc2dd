-- Mail: the transactional outbox, rendered mails kept for audit, stream enrollments
-- and the suppression list. Instants are Unix milliseconds (UTC).

-- Every mail intent, written in the same transaction as the change that caused it.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY,
    idem_key      TEXT    NOT NULL UNIQUE,   -- the same intent is never enqueued twice
    lead_id       INTEGER NOT NULL REFERENCES leads (id),
    template      TEXT    NOT NULL,
    class         TEXT    NOT NULL CHECK (class IN ('marketing', 'transactional')),
    kind          TEXT    NOT NULL CHECK (kind IN ('trigger', 'stream', 'optin')),
    dedupe_key    TEXT,                      -- trigger mails: once per lead, template and key
    enrollment_id INTEGER,                   -- stream mails
    step          INTEGER,
    data          TEXT    NOT NULL DEFAULT '{}',  -- JSON handed to the template
    source        TEXT    NOT NULL,          -- rules/50-mail.rhai:12, stream:welcome, api:...
    event_seq     INTEGER,
    status        TEXT    NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'suppressed')),
    reason        TEXT,                      -- why suppressed, deferred or failed
    attempts      INTEGER NOT NULL DEFAULT 0,   -- times claimed
    tries         INTEGER NOT NULL DEFAULT 0,   -- SMTP tries that failed for a while
    first_try_at  INTEGER,                      -- the first of them: retry age counts from here
    created_at    INTEGER NOT NULL,
    due_at        INTEGER NOT NULL,
    claimed_by    TEXT,
    finished_at   INTEGER,
    message_id    TEXT
);
CREATE INDEX outbox_due ON outbox (due_at) WHERE status = 'queued';
CREATE INDEX outbox_sending ON outbox (id) WHERE status = 'sending';
CREATE INDEX outbox_dedupe ON outbox (lead_id, template, dedupe_key, created_at)
    WHERE dedupe_key IS NOT NULL;
CREATE INDEX outbox_marketing_sent ON outbox (lead_id, finished_at)
    WHERE status = 'sent' AND class = 'marketing';
CREATE INDEX outbox_lead ON outbox (lead_id, id);

-- The mail as sent, for audit.
CREATE TABLE mail_content (
    outbox_id INTEGER PRIMARY KEY REFERENCES outbox (id),
    recipient TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    text_body TEXT    NOT NULL,
    html_body TEXT    NOT NULL,
    headers   TEXT    NOT NULL DEFAULT '{}'  -- JSON: the headers nurtured set
);

-- A lead's membership of a nurture stream. `step` is the next step to send; while the
-- mail of a step is on its way, next_due_at is NULL.
CREATE TABLE enrollments (
    id          INTEGER PRIMARY KEY,
    lead_id     INTEGER NOT NULL REFERENCES leads (id),
    stream      TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('active', 'paused', 'exited', 'completed')),
    step        INTEGER NOT NULL DEFAULT 0,
    next_due_at INTEGER,
    entered_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    end_reason  TEXT
);
CREATE UNIQUE INDEX enrollments_open ON enrollments (lead_id, stream)
    WHERE status IN ('active', 'paused');
CREATE INDEX enrollments_due ON enrollments (next_due_at) WHERE status = 'active';
CREATE INDEX enrollments_lead ON enrollments (lead_id, stream, ended_at);

-- Addresses that get no mail at all (hard bounces, rejected recipients).
CREATE TABLE suppressions (
    email      TEXT PRIMARY KEY,
    reason     TEXT    NOT NULL,
    detail     TEXT,
    created_at INTEGER NOT NULL
);
