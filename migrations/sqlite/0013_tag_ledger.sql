-- Who set or took away each tag, when and why (like stage_history and score_ledger),
-- and what people did to a mail by hand (a failed mail queued again).

CREATE TABLE tag_ledger (
    id          INTEGER PRIMARY KEY,
    lead_id     INTEGER NOT NULL REFERENCES leads (id),
    tag         TEXT    NOT NULL,
    added       INTEGER NOT NULL CHECK (added IN (0, 1)),
    at          INTEGER NOT NULL,
    source_kind TEXT    NOT NULL,   -- rule | api | system
    source      TEXT    NOT NULL,   -- rules/40-funnel.rhai:23, api:crm, ingest, job:...
    reason      TEXT    NOT NULL,
    event_seq   INTEGER
);
CREATE INDEX tag_ledger_lead ON tag_ledger (lead_id, tag, id);

CREATE TABLE mail_log (
    id        INTEGER PRIMARY KEY,
    outbox_id INTEGER NOT NULL REFERENCES outbox (id),
    lead_id   INTEGER NOT NULL REFERENCES leads (id),
    at        INTEGER NOT NULL,
    what      TEXT    NOT NULL,   -- retried
    actor     TEXT    NOT NULL,   -- cli:USER, api:KEY
    note      TEXT    NOT NULL    -- the reason the mail had failed with
);
CREATE INDEX mail_log_outbox ON mail_log (outbox_id, id);
CREATE INDEX mail_log_lead ON mail_log (lead_id);
