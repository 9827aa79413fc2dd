-- The event queue apart from the events: an event row is written once and never
-- changed; `event_queue` lists the events not processed yet and `event_failures` the
-- ones whose rules failed (an event in neither is processed). Processing an event then
-- deletes a small queue row instead of rewriting the event, and an event stores 17
-- bytes less. Each lead counts the events processed for it, so the processor knows how
-- long a lead's history is before it reads it.

CREATE TABLE events_v4 (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT    NOT NULL UNIQUE,
    lead_id      INTEGER NOT NULL REFERENCES leads (id),
    kind         TEXT    NOT NULL CHECK (kind IN ('identify', 'track', 'page')),
    name         TEXT    NOT NULL,
    properties   TEXT    NOT NULL DEFAULT '{}',
    traits       TEXT,
    context      TEXT,
    occurred_at  INTEGER NOT NULL,
    received_at  INTEGER NOT NULL
);

-- Events waiting to be processed, in arrival order.
CREATE TABLE event_queue (
    seq INTEGER PRIMARY KEY
);

-- Events whose rules failed; `nurtured events retry` queues them again.
CREATE TABLE event_failures (
    seq       INTEGER PRIMARY KEY,
    attempts  INTEGER NOT NULL,
    error     TEXT    NOT NULL,   -- JSON: file, line, column, message
    failed_at INTEGER NOT NULL
);

INSERT INTO events_v4 (seq, message_id, lead_id, kind, name, properties, traits, context,
    occurred_at, received_at)
SELECT seq, message_id, lead_id, kind, name, properties, traits, context, occurred_at,
    received_at
FROM events;
INSERT INTO event_queue (seq) SELECT seq FROM events WHERE status = 'pending';
INSERT INTO event_failures (seq, attempts, error, failed_at)
SELECT seq, attempts, COALESCE(error, '{}'), COALESCE(processed_at, received_at)
FROM events WHERE status = 'failed';

DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE INDEX events_lead_name ON events (lead_id, name, occurred_at);

ALTER TABLE leads ADD COLUMN events INTEGER NOT NULL DEFAULT 0;
UPDATE leads SET events = (
    SELECT COUNT(*) FROM events
    WHERE events.lead_id = leads.id
      AND events.seq NOT IN (SELECT seq FROM event_queue)
);
