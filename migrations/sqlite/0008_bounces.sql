-- Bounces and complaints: every delivery report, feedback report and ESP webhook
-- event read, with what was done about it. Instants are Unix milliseconds (UTC).
CREATE TABLE bounce_log (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    email      TEXT    NOT NULL,
    lead_id    INTEGER,                 -- NULL when no lead has the address
    outbox_id  INTEGER,                 -- the mail the report is about, when known
    kind       TEXT    NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint', 'unsubscribe')),
    status     TEXT,                    -- enhanced status code (5.1.1) or the ESP's type
    diagnostic TEXT,                    -- the receiving server's answer
    source     TEXT    NOT NULL,        -- dsn, arf, mailto, ses, postmark, mailgun, sendgrid
    report_id  TEXT,                    -- the report's own id (Message-ID, SNS MessageId, ...)
    action     TEXT    NOT NULL         -- suppressed, counted, unsubscribed, none
);
CREATE INDEX bounce_log_email ON bounce_log (email, kind, at);
CREATE INDEX bounce_log_lead ON bounce_log (lead_id, at);
-- A report read twice (a retried webhook, a message piped again) is logged once.
CREATE UNIQUE INDEX bounce_log_report ON bounce_log (source, report_id, email);
