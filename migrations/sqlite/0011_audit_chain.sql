-- Tamper evidence for the audit trail.
--
-- Each tenant's rows form a hash chain: `seq` counts 1, 2, 3 … per tenant with no gap, and
-- `hash` is SHA-256 over the row's fields and `prev_hash`, the hash of the tenant's previous
-- row ('' before the first). Requests insert rows unsealed (seq, prev_hash and hash NULL: one
-- plain INSERT, so tenants' requests never queue on the chain); the service seals them in the
-- background, oldest first, within about a second, taking `audit_chain_heads` (each tenant's
-- last seq and hash) under a lock. Sealing sets the three chain fields once and changes
-- nothing else. `telemental audit verify` recomputes every chain: an altered row breaks its
-- own hash, a removed row leaves a gap in `seq` and a `prev_hash` that no longer matches, a
-- removed tail disagrees with the head. Rows from before this migration are sealed the same way.
ALTER TABLE audit_events ADD COLUMN seq INTEGER;
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_events_by_chain ON audit_events (tenant, seq);
-- The sealer's queue.
CREATE INDEX audit_events_unsealed ON audit_events (tenant, id) WHERE seq IS NULL;

CREATE TABLE audit_chain_heads (
    tenant TEXT PRIMARY KEY NOT NULL,
    seq    INTEGER NOT NULL,
    hash   TEXT NOT NULL
);

-- `telemental audit archive` (never the service) moves sealed rows past the retention to a
-- file. It first writes an anchor, the seq and hash of the last row it removes, so the chain
-- of what remains still verifies from the anchor. Rows may only be deleted under an anchor.
CREATE TABLE audit_archive_anchors (
    id          BLOB PRIMARY KEY NOT NULL,
    tenant      TEXT NOT NULL,
    upto_seq    INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    rows        INTEGER NOT NULL,
    archived_at TEXT NOT NULL
);
CREATE INDEX audit_archive_anchors_by_tenant ON audit_archive_anchors (tenant, upto_seq);

-- INSERT OR REPLACE deletes the row it replaces without firing DELETE triggers: refuse any
-- insert whose id or (tenant, seq) is taken, and any insert that claims to be sealed already.
CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events
WHEN NEW.seq IS NOT NULL OR NEW.prev_hash IS NOT NULL OR NEW.hash IS NOT NULL
  OR EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

-- UPDATE only to seal a row once: the chain fields from NULL, every other field unchanged.
DROP TRIGGER audit_events_no_update;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
WHEN NOT (OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL
          AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
          AND NEW.id IS OLD.id AND NEW.tenant IS OLD.tenant AND NEW.at IS OLD.at
          AND NEW.actor IS OLD.actor AND NEW.action IS OLD.action
          AND NEW.resource_type IS OLD.resource_type AND NEW.resource_id IS OLD.resource_id
          AND NEW.subject IS OLD.subject AND NEW.request_id IS OLD.request_id
          AND NEW.outcome IS OLD.outcome)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

-- DELETE only of sealed rows under an archive anchor.
DROP TRIGGER audit_events_no_delete;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN OLD.seq IS NULL OR NOT EXISTS (SELECT 1 FROM audit_archive_anchors a
                                    WHERE a.tenant = OLD.tenant AND a.upto_seq >= OLD.seq)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

CREATE TRIGGER audit_chain_heads_no_replace BEFORE INSERT ON audit_chain_heads
WHEN EXISTS (SELECT 1 FROM audit_chain_heads WHERE tenant = NEW.tenant)
BEGIN SELECT RAISE(ABORT, 'audit_chain_heads only moves forward'); END;
CREATE TRIGGER audit_chain_heads_forward BEFORE UPDATE ON audit_chain_heads
WHEN NEW.tenant <> OLD.tenant OR NEW.seq <= OLD.seq
BEGIN SELECT RAISE(ABORT, 'audit_chain_heads only moves forward'); END;
CREATE TRIGGER audit_chain_heads_no_delete BEFORE DELETE ON audit_chain_heads
BEGIN SELECT RAISE(ABORT, 'audit_chain_heads only moves forward'); END;

CREATE TRIGGER audit_archive_anchors_no_replace BEFORE INSERT ON audit_archive_anchors
WHEN EXISTS (SELECT 1 FROM audit_archive_anchors WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'audit_archive_anchors is append-only'); END;
CREATE TRIGGER audit_archive_anchors_no_update BEFORE UPDATE ON audit_archive_anchors
BEGIN SELECT RAISE(ABORT, 'audit_archive_anchors is append-only'); END;
CREATE TRIGGER audit_archive_anchors_no_delete BEFORE DELETE ON audit_archive_anchors
BEGIN SELECT RAISE(ABORT, 'audit_archive_anchors is append-only'); END;
