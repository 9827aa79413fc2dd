-- Events taken in as history (`nurtured ingest --history`, `"history": true` on the
-- batch API): processed with rules, scores and stages, but they queue no mail, start
-- no stream and hand no lead to sales. 0 for live events.
ALTER TABLE events ADD COLUMN history INTEGER NOT NULL DEFAULT 0;

-- The pause of delivery while the SMTP server refuses the sender: one row while
-- paused, none while delivery runs. Written by the daemon that sends, read by the
-- stats of every daemon and by `nurtured stats`.
CREATE TABLE mail_pause (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    since          INTEGER NOT NULL,
    next_probe     INTEGER NOT NULL,
    answer         TEXT    NOT NULL,
    refused_probes INTEGER NOT NULL
);
