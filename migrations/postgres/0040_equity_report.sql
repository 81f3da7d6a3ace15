-- The equity report (GET /v1/reports/equity): counts only. Nothing here names a person.

-- Recommendations are not stored; each one is counted as it is made, per tenant, UTC day and
-- the three things the report breaks them down by. `shard` (0-15, drawn at random per write)
-- spreads concurrent increments over several rows so that they do not queue on one row lock.
CREATE TABLE recommendation_counts (
    tenant           text NOT NULL,
    day              date NOT NULL,      -- UTC
    modality         text NOT NULL,      -- the recommended modality
    exclusion_level  text NOT NULL,      -- the plan's (EXCL-1): none | at_risk | excluded | no_plan
    first_preference text NOT NULL,      -- recommended = first of the ranking: yes | no | no_plan
    shard            integer NOT NULL,
    n                bigint NOT NULL,
    PRIMARY KEY (tenant, day, modality, exclusion_level, first_preference, shard)
);

-- A plan's digital exclusion factors (EXCL-1) as a bit mask, computed by the database from
-- the stored form's `resources`, so that the report counts plans from an index instead of
-- reading every body, and the write path stays as it is:
--   1 no_device (no smartphone, tablet or computer), 2 no_connectivity,
--   4 limited_connectivity, 8 no_digital_skills.
-- The level follows from the mask (0: none, 4: at_risk, else excluded). This must agree with
-- `DigitalExclusion::of`: a test compares the two over every stored sample and every
-- combination of resources, so a stored form that moves `resources` fails it until a new
-- migration follows. STORED (PostgreSQL has no virtual generated columns before 18).
ALTER TABLE plans ADD COLUMN exclusion_mask integer GENERATED ALWAYS AS (
    (CASE WHEN COALESCE((body->'resources'->'devices') ?| array['smartphone', 'tablet', 'computer'], false)
          THEN 0 ELSE 1 END)
  + (CASE body->'resources'->>'connectivity' WHEN 'none' THEN 2 WHEN 'limited' THEN 4 ELSE 0 END)
  + (CASE WHEN body->'resources'->>'digital_skills' = 'none' THEN 8 ELSE 0 END)
) STORED;
ALTER TABLE plan_versions ADD COLUMN exclusion_mask integer GENERATED ALWAYS AS (
    (CASE WHEN COALESCE((body->'resources'->'devices') ?| array['smartphone', 'tablet', 'computer'], false)
          THEN 0 ELSE 1 END)
  + (CASE body->'resources'->>'connectivity' WHEN 'none' THEN 2 WHEN 'limited' THEN 4 ELSE 0 END)
  + (CASE WHEN body->'resources'->>'digital_skills' = 'none' THEN 8 ELSE 0 END)
) STORED;
-- Current plans by mask: an index-only count. Plans written per period (the last version of
-- each plan in the period): an index-only range scan.
CREATE INDEX plans_by_exclusion ON plans (tenant, exclusion_mask);
CREATE INDEX plan_versions_by_time ON plan_versions (tenant, recorded_at, record_id, version, exclusion_mask);

-- Referrals by reason and urgency (fixed at creation), and each version's status, so that the
-- first time a referral was scheduled is the earliest `scheduled` version.
ALTER TABLE referrals ADD COLUMN reason text GENERATED ALWAYS AS (body->'request'->>'reason') STORED;
ALTER TABLE referrals ADD COLUMN urgency text GENERATED ALWAYS AS (body->'request'->>'urgency') STORED;
ALTER TABLE referral_versions ADD COLUMN status text GENERATED ALWAYS AS (body->>'status') STORED;
CREATE INDEX referrals_by_created ON referrals (tenant, created_at, reason, urgency, status, due_by, id);
CREATE INDEX referral_versions_by_status ON referral_versions (tenant, status, recorded_at, record_id);

CREATE INDEX session_checks_by_created ON session_checks (tenant, created_at, outcome);
