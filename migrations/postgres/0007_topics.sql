-- Topic preferences (see the SQLite migration 0011).

ALTER TABLE leads ADD COLUMN topics_left TEXT NOT NULL DEFAULT '[]';

CREATE TABLE lead_topics (
    lead_id BIGINT NOT NULL REFERENCES leads (id),
    topic   TEXT   NOT NULL,
    state   TEXT   NOT NULL CHECK (state IN ('left', 'kept')),
    at      BIGINT NOT NULL,
    source  TEXT   NOT NULL,
    PRIMARY KEY (lead_id, topic)
);
