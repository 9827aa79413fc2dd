-- Topic preferences. `leads.topics_left` is the JSON array of the [[topics]] ids a lead
-- left (read with the lead, for the rules and the send-time check); `lead_topics`
-- keeps, per lead and topic, the last choice with when and where it was made
-- (`left`: no more mails of the topic; `kept`: chosen again on the preference page).

ALTER TABLE leads ADD COLUMN topics_left TEXT NOT NULL DEFAULT '[]';

CREATE TABLE lead_topics (
    lead_id INTEGER NOT NULL REFERENCES leads (id),
    topic   TEXT    NOT NULL,
    state   TEXT    NOT NULL CHECK (state IN ('left', 'kept')),
    at      INTEGER NOT NULL,
    source  TEXT    NOT NULL,
    PRIMARY KEY (lead_id, topic)
);
