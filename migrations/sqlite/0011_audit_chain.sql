-- Tamper evidence for the audit trail.
--
-- Each tenant's rows form a hash chain: `seq` counts 1, 2, 3 … per tenant with no gap, and
-- `hash` is SHA-256 over the row's fields and `prev_hash`, the hash of the tenant's previous row
-- ('' before the first). `audit_chain_heads` holds each tenant's last seq and hash; it is
-- updated in the transaction that inserts the row, which also serialises a tenant's inserts.
-- `telemental audit verify` recomputes every chain: an altered row breaks its own hash, a
-- removed row leaves a gap in `seq` and a `prev_hash` that no longer matches, a removed tail
-- disagrees with the head.
--
-- Rows written before this migration have no chain (seq IS NULL); verify counts them.
ALTER TABLE audit_events ADD COLUMN seq INTEGER;
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_events_by_chain ON audit_events (tenant, seq);

CREATE TABLE audit_chain_heads (
    tenant TEXT PRIMARY KEY NOT NULL,
    seq    INTEGER NOT NULL,
    hash   TEXT NOT NULL
);

-- `telemental audit archive` (never the service) moves rows past the retention to a file. It
-- first writes an anchor, the seq and hash of the last row it removes, so the chain of what
-- remains still verifies from the anchor. Rows may only be deleted under an anchor.
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
-- insert whose id or (tenant, seq) is taken, and any row without its chain fields.
CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events
WHEN EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.id OR (tenant = NEW.tenant AND seq = NEW.seq))
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_chained BEFORE INSERT ON audit_events
WHEN NEW.seq IS NULL OR NEW.prev_hash IS NULL OR NEW.hash IS NULL
BEGIN SELECT RAISE(ABORT, 'audit_events rows must carry their chain'); END;

-- Deletes only of archived rows (under an anchor); everything else stays refused.
DROP TRIGGER audit_events_no_delete;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN NOT EXISTS (SELECT 1 FROM audit_archive_anchors a
                 WHERE a.tenant = OLD.tenant AND (OLD.seq IS NULL OR a.upto_seq >= OLD.seq))
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

CREATE TRIGGER audit_chain_heads_no_replace BEFORE INSERT ON audit_chain_heads
WHEN EXISTS (SELECT 1 FROM audit_chain_heads WHERE tenant = NEW.tenant)
BEGIN SELECT RAISE(ABORT, 'audit_chain_heads only moves forward'); END;
CREATE TRIGGER audit_chain_heads_forward BEFORE UPDATE ON audit_chain_heads
WHEN NEW.tenant <> OLD.tenant OR NEW.seq < OLD.seq OR NEW.seq > OLD.seq + 1
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
