-- Shadow rules and per-file rule failures.
--
-- A rule file listed in `[rules] shadow` runs for every event after the live files,
-- but what it asks for is only recorded: `shadow_counts` counts its would-be actions
-- (and its errors, as action `error`) per file and call site; `shadow_examples` keeps
-- the most recent ones per file (about 100) with the lead and the event.
--
-- `event_failures.rules`: when some rule files failed for an event while the others'
-- changes were applied, the JSON array of those files' errors (`events retry` reruns
-- only them); NULL when the event failed as a whole.

ALTER TABLE event_failures ADD COLUMN rules TEXT;

CREATE TABLE shadow_counts (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    file    TEXT    NOT NULL,
    source  TEXT    NOT NULL,   -- rules/55-webinar-fan.rhai:12
    action  TEXT    NOT NULL,   -- tag webinar-fan, add_interest 5, error
    count   INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    UNIQUE (file, source, action)
);

CREATE TABLE shadow_examples (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    file    TEXT    NOT NULL,
    lead_id INTEGER NOT NULL REFERENCES leads (id),
    seq     INTEGER NOT NULL,
    source  TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    message TEXT,               -- the error, for action `error`
    at      INTEGER NOT NULL
);

CREATE INDEX shadow_examples_file ON shadow_examples (file, id);
CREATE INDEX shadow_examples_lead ON shadow_examples (lead_id);
