-- The equity report (GET /v1/reports/equity): counts only. Nothing here names a person.

-- Recommendations are not stored; each one is counted as it is made, per tenant, UTC day and
-- the three things the report breaks them down by. `shard` (0-15, drawn at random per write)
-- spreads concurrent increments over several rows so that they do not queue on one row lock.
CREATE TABLE recommendation_counts (
    tenant           TEXT NOT NULL,
    day              TEXT NOT NULL,      -- YYYY-MM-DD, UTC
    modality         TEXT NOT NULL,      -- the recommended modality
    exclusion_level  TEXT NOT NULL,      -- the plan's (EXCL-1): none | at_risk | excluded | no_plan
    first_preference TEXT NOT NULL,      -- recommended = first of the ranking: yes | no | no_plan
    shard            INTEGER NOT NULL,
    n                INTEGER NOT NULL,
    PRIMARY KEY (tenant, day, modality, exclusion_level, first_preference, shard)
);

-- A plan's digital exclusion factors (EXCL-1) as a bit mask, computed by the database from
-- the stored form's `resources`, so that the report counts plans from an index instead of
-- reading every body, and the service's write path stays as it is:
--   1 no_device (no smartphone, tablet or computer), 2 no_connectivity,
--   4 limited_connectivity, 8 no_digital_skills.
-- The level follows from the mask (0: none, 4: at_risk, else excluded). This must agree with
-- `DigitalExclusion::of`: a test compares the two over every stored sample and every
-- combination of resources, so a stored form that moves `resources` fails it until a new
-- migration follows.
-- Plain columns kept by triggers, not generated columns: SQLite never treats an index holding
-- a virtual column as covering, so counting 1 M plans would read 1 M rows (and a STORED
-- column cannot be added to an existing table). PostgreSQL uses STORED generated columns.
ALTER TABLE plans ADD COLUMN exclusion_mask INTEGER;
ALTER TABLE plan_versions ADD COLUMN exclusion_mask INTEGER;
UPDATE plans SET exclusion_mask = (CASE WHEN instr(COALESCE(json_extract(body, '$.resources.devices'), ''), '"smartphone"')
             + instr(COALESCE(json_extract(body, '$.resources.devices'), ''), '"tablet"')
             + instr(COALESCE(json_extract(body, '$.resources.devices'), ''), '"computer"') = 0
          THEN 1 ELSE 0 END)
  + (CASE json_extract(body, '$.resources.connectivity') WHEN 'none' THEN 2 WHEN 'limited' THEN 4 ELSE 0 END)
  + (CASE WHEN json_extract(body, '$.resources.digital_skills') = 'none' THEN 8 ELSE 0 END);
UPDATE plan_versions SET exclusion_mask = (CASE WHEN instr(COALESCE(json_extract(body, '$.resources.devices'), ''), '"smartphone"')
             + instr(COALESCE(json_extract(body, '$.resources.devices'), ''), '"tablet"')
             + instr(COALESCE(json_extract(body, '$.resources.devices'), ''), '"computer"') = 0
          THEN 1 ELSE 0 END)
  + (CASE json_extract(body, '$.resources.connectivity') WHEN 'none' THEN 2 WHEN 'limited' THEN 4 ELSE 0 END)
  + (CASE WHEN json_extract(body, '$.resources.digital_skills') = 'none' THEN 8 ELSE 0 END);
CREATE TRIGGER plans_exclusion_mask_on_insert AFTER INSERT ON plans
BEGIN UPDATE plans SET exclusion_mask = (CASE WHEN instr(COALESCE(json_extract(NEW.body, '$.resources.devices'), ''), '"smartphone"')
             + instr(COALESCE(json_extract(NEW.body, '$.resources.devices'), ''), '"tablet"')
             + instr(COALESCE(json_extract(NEW.body, '$.resources.devices'), ''), '"computer"') = 0
          THEN 1 ELSE 0 END)
  + (CASE json_extract(NEW.body, '$.resources.connectivity') WHEN 'none' THEN 2 WHEN 'limited' THEN 4 ELSE 0 END)
  + (CASE WHEN json_extract(NEW.body, '$.resources.digital_skills') = 'none' THEN 8 ELSE 0 END)
  WHERE rowid = NEW.rowid; END;
CREATE TRIGGER plans_exclusion_mask_on_update AFTER UPDATE OF body ON plans
BEGIN UPDATE plans SET exclusion_mask = (CASE WHEN instr(COALESCE(json_extract(NEW.body, '$.resources.devices'), ''), '"smartphone"')
             + instr(COALESCE(json_extract(NEW.body, '$.resources.devices'), ''), '"tablet"')
             + instr(COALESCE(json_extract(NEW.body, '$.resources.devices'), ''), '"computer"') = 0
          THEN 1 ELSE 0 END)
  + (CASE json_extract(NEW.body, '$.resources.connectivity') WHEN 'none' THEN 2 WHEN 'limited' THEN 4 ELSE 0 END)
  + (CASE WHEN json_extract(NEW.body, '$.resources.digital_skills') = 'none' THEN 8 ELSE 0 END)
  WHERE rowid = NEW.rowid; END;
-- Versions are written once.
CREATE TRIGGER plan_versions_exclusion_mask AFTER INSERT ON plan_versions
BEGIN UPDATE plan_versions SET exclusion_mask = (CASE WHEN instr(COALESCE(json_extract(NEW.body, '$.resources.devices'), ''), '"smartphone"')
             + instr(COALESCE(json_extract(NEW.body, '$.resources.devices'), ''), '"tablet"')
             + instr(COALESCE(json_extract(NEW.body, '$.resources.devices'), ''), '"computer"') = 0
          THEN 1 ELSE 0 END)
  + (CASE json_extract(NEW.body, '$.resources.connectivity') WHEN 'none' THEN 2 WHEN 'limited' THEN 4 ELSE 0 END)
  + (CASE WHEN json_extract(NEW.body, '$.resources.digital_skills') = 'none' THEN 8 ELSE 0 END)
  WHERE rowid = NEW.rowid; END;
-- Current plans by mask: an index-only count. Plans written per period (the last version of
-- each plan in the period): an index-only range scan.
CREATE INDEX plans_by_exclusion ON plans (tenant, exclusion_mask);
CREATE INDEX plan_versions_by_time ON plan_versions (tenant, recorded_at, record_id, version, exclusion_mask);

-- Referrals by reason and urgency (fixed at creation), and each version's status, so that the
-- first time a referral was scheduled is the earliest `scheduled` version. Kept by triggers
-- for the same reason as above; a referral's request never changes, its versions are
-- written once.
ALTER TABLE referrals ADD COLUMN reason TEXT;
ALTER TABLE referrals ADD COLUMN urgency TEXT;
ALTER TABLE referral_versions ADD COLUMN status TEXT;
UPDATE referrals SET reason = json_extract(body, '$.request.reason'),
    urgency = json_extract(body, '$.request.urgency');
UPDATE referral_versions SET status = json_extract(body, '$.status');
CREATE TRIGGER referrals_reason_urgency AFTER INSERT ON referrals
BEGIN UPDATE referrals SET reason = json_extract(NEW.body, '$.request.reason'),
    urgency = json_extract(NEW.body, '$.request.urgency') WHERE rowid = NEW.rowid; END;
CREATE TRIGGER referral_versions_status AFTER INSERT ON referral_versions
BEGIN UPDATE referral_versions SET status = json_extract(NEW.body, '$.status')
  WHERE rowid = NEW.rowid; END;
CREATE INDEX referrals_by_created ON referrals (tenant, created_at, reason, urgency, status, due_by, id);
CREATE INDEX referral_versions_by_status ON referral_versions (tenant, status, recorded_at, record_id);

CREATE INDEX session_checks_by_created ON session_checks (tenant, created_at, outcome);
