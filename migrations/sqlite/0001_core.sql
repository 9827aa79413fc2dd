-- Core tables: leads, their activity (events), stage history, score ledger,
-- the processing lease and scheduled job runs. Instants are Unix milliseconds (UTC).

CREATE TABLE leads (
    id                      INTEGER PRIMARY KEY,
    email                   TEXT    NOT NULL UNIQUE,      -- lower-cased
    external_id             TEXT    UNIQUE,               -- the sender's userId, when not an e-mail
    first_name              TEXT,
    last_name               TEXT,
    phone                   TEXT,
    company                 TEXT,
    title                   TEXT,
    industry                TEXT,
    employees               INTEGER,
    revenue                 REAL,
    country                 TEXT,
    time_zone               TEXT,
    locale                  TEXT,
    consent_email           INTEGER NOT NULL DEFAULT 0,
    consent_email_at        INTEGER,
    consent_email_source    TEXT,
    consent_tracking        INTEGER NOT NULL DEFAULT 0,
    consent_tracking_at     INTEGER,
    consent_tracking_source TEXT,
    stage                   TEXT    NOT NULL,
    stage_since             INTEGER NOT NULL,
    fit                     REAL    NOT NULL DEFAULT 0,
    fit_parts               TEXT    NOT NULL DEFAULT '{}', -- JSON: criterion -> points
    interest                REAL    NOT NULL DEFAULT 0,
    tags                    TEXT    NOT NULL DEFAULT '[]', -- JSON array
    owner                   TEXT,
    attributes              TEXT    NOT NULL DEFAULT '{}', -- JSON object
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);
CREATE INDEX leads_stage ON leads (stage);

-- What leads did. The content of a row never changes; only the processing columns do.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT    NOT NULL UNIQUE,
    lead_id      INTEGER NOT NULL REFERENCES leads (id),
    kind         TEXT    NOT NULL CHECK (kind IN ('identify', 'track', 'page')),
    name         TEXT    NOT NULL,
    properties   TEXT    NOT NULL DEFAULT '{}',
    traits       TEXT,
    context      TEXT,
    occurred_at  INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processed', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,                                   -- JSON: file, line, column, message
    processed_at INTEGER
);
CREATE INDEX events_pending ON events (seq) WHERE status = 'pending';
CREATE INDEX events_failed ON events (seq) WHERE status = 'failed';
CREATE INDEX events_lead_name ON events (lead_id, name, occurred_at);

CREATE TABLE stage_history (
    id          INTEGER PRIMARY KEY,
    lead_id     INTEGER NOT NULL REFERENCES leads (id),
    from_stage  TEXT,
    to_stage    TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    source_kind TEXT    NOT NULL,   -- rule | api | system
    source      TEXT    NOT NULL,   -- rules/40-funnel.rhai:23, api:crm, ingest, job:...
    reason      TEXT    NOT NULL,
    event_seq   INTEGER
);
CREATE INDEX stage_history_lead ON stage_history (lead_id, id);

CREATE TABLE score_ledger (
    id          INTEGER PRIMARY KEY,
    lead_id     INTEGER NOT NULL REFERENCES leads (id),
    axis        TEXT    NOT NULL CHECK (axis IN ('fit', 'interest')),
    delta       REAL    NOT NULL,
    at          INTEGER NOT NULL,
    source_kind TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    event_seq   INTEGER
);
CREATE INDEX score_ledger_lead ON score_ledger (lead_id, id);

-- Counters kept in the same transactions as the rows they count.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('events_received', 0);

-- Who may process events: one process per database.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE job_runs (
    id          INTEGER PRIMARY KEY,
    schedule    TEXT    NOT NULL,
    due_at      INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    leads       INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE INDEX job_runs_schedule ON job_runs (schedule, due_at);
