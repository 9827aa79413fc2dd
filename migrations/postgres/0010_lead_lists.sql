-- Lead lists (`GET /v1/leads`, `nurtured lead list`) page by lead id: a stage filter
-- reads (stage, id) in order, and a tag filter reads a GIN index over the tags (stored
-- as JSON text; the index is over their jsonb value, for `tags::jsonb @> '["tag"]'`).
DROP INDEX leads_stage;
CREATE INDEX leads_stage ON leads (stage, id);
CREATE INDEX leads_tags ON leads USING gin ((tags::jsonb) jsonb_path_ops);
