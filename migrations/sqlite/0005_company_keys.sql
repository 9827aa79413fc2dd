-- The sales brief lists other leads of the same company (same company name or mail
-- domain) that are with sales or have an open handoff. A handoff keeps the company and
-- domain keys of its lead as they were when it was created, so open handoffs are found
-- by company through small partial indexes instead of a scan of every open handoff.
-- (Leads in sales stages are found through partial indexes that follow the configured
-- funnel; the daemon keeps them in step at start, see `Store::keep_sales_indexes`.)

ALTER TABLE handoffs ADD COLUMN company_key TEXT;
ALTER TABLE handoffs ADD COLUMN domain_key TEXT;
UPDATE handoffs SET
    company_key = (SELECT lower(trim(l.company)) FROM leads l WHERE l.id = handoffs.lead_id),
    domain_key = (SELECT substr(l.email, instr(l.email, '@') + 1) FROM leads l
                  WHERE l.id = handoffs.lead_id)
WHERE state IN ('new', 'open', 'escalated');
CREATE INDEX handoffs_open_company ON handoffs (company_key, lead_id)
    WHERE state IN ('new', 'open', 'escalated');
CREATE INDEX handoffs_open_domain ON handoffs (domain_key, lead_id)
    WHERE state IN ('new', 'open', 'escalated');
