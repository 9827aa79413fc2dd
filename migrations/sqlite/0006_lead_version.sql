-- Every write of a lead by a daemon of a PostgreSQL cluster counts up its version, so a
-- daemon holding an older copy of the lead notices and reads it again instead of
-- writing over a change made elsewhere. SQLite has one writing process; the column is
-- kept so both stores have the same tables.

ALTER TABLE leads ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
