-- Several daemons on one database.
--
-- Leads are split into shards (lead id modulo the number of shards); each shard is
-- processed by the daemon holding its lease. Daemons report in `cluster_members`
-- with a heartbeat; a shard whose holder stopped renewing it is taken over by
-- another daemon once it expired. Times are the database server's, in milliseconds
-- since 1970, so the hosts' clocks do not matter.

CREATE TABLE cluster_members (
    daemon       TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    http_addr    TEXT   NOT NULL DEFAULT ''
);

CREATE TABLE shard_leases (
    shard      INTEGER PRIMARY KEY,
    holder     TEXT,
    expires_at BIGINT NOT NULL DEFAULT 0
);

-- Every write of a lead by a daemon counts up its version: a daemon holding an older
-- copy of the lead notices and reads it again instead of writing over a change made
-- elsewhere (the stage API, a handoff answer, the sales desk on another daemon).
ALTER TABLE leads ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
