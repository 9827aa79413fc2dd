-- Anonymous visitors (Segment's `anonymousId`) and company groups (Segment's `group`).
--
-- An event that names no lead, only an anonymous id, waits in `anonymous_events` under
-- its `anonymous_profiles` row; rules never see it there. An identify (or any event
-- with a lead) carrying the same anonymous id, or an `alias`, joins the profile to the
-- lead: its events move into `events` for the lead, oldest first, and are processed
-- like new ones. A joined profile keeps its lead, so later events under the same
-- anonymous id go to the lead at once. Times in milliseconds since 1970.

CREATE TABLE anonymous_profiles (
    anonymous_id TEXT    PRIMARY KEY,
    user_id      TEXT,                          -- a userId the visitor was named by before a lead had it
    lead_id      INTEGER REFERENCES leads (id), -- set when joined
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    joined_at    INTEGER
);
CREATE INDEX anonymous_profiles_user ON anonymous_profiles (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX anonymous_profiles_unjoined ON anonymous_profiles (last_seen) WHERE lead_id IS NULL;

CREATE TABLE anonymous_events (
    message_id   TEXT    PRIMARY KEY,
    anonymous_id TEXT    NOT NULL REFERENCES anonymous_profiles (anonymous_id),
    kind         TEXT    NOT NULL CHECK (kind IN ('identify', 'track', 'page')),
    name         TEXT    NOT NULL,
    properties   TEXT    NOT NULL DEFAULT '{}',
    traits       TEXT,
    context      TEXT,
    occurred_at  INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    history      INTEGER NOT NULL DEFAULT 0  -- taken in as history (no mail when joined)
);
CREATE INDEX anonymous_events_profile ON anonymous_events (anonymous_id, occurred_at);

-- Segment groups (accounts): their latest traits, and who belongs to them. A member is
-- a lead, or an anonymous profile until it is joined.
CREATE TABLE company_groups (
    group_id   TEXT    PRIMARY KEY,
    traits     TEXT    NOT NULL DEFAULT '{}',
    updated_at INTEGER NOT NULL
);

CREATE TABLE group_members (
    id           INTEGER PRIMARY KEY,
    group_id     TEXT    NOT NULL REFERENCES company_groups (group_id),
    lead_id      INTEGER REFERENCES leads (id),
    anonymous_id TEXT,
    joined_at    INTEGER NOT NULL,
    CHECK ((lead_id IS NULL) <> (anonymous_id IS NULL))
);
CREATE UNIQUE INDEX group_members_lead ON group_members (group_id, lead_id) WHERE lead_id IS NOT NULL;
CREATE UNIQUE INDEX group_members_anonymous ON group_members (group_id, anonymous_id) WHERE anonymous_id IS NOT NULL;
CREATE INDEX group_members_of_lead ON group_members (lead_id);
