-- Audit rows written by the group-commit writer (the audit rows of reads, recommendations and
-- CDS calls) are linked into their tenant's hash chain as they are inserted, instead of being
-- inserted unsealed and written a second time by the sealer. Rows of record changes are still
-- inserted unsealed and sealed in the background.
--
-- An insert that carries chain fields is allowed only as the next link of its tenant's chain
-- (all three fields set, `seq` one past the head, `prev_hash` the head's hash), and it moves
-- the head with it, in the same statement. So the head is always the last linked row, and no
-- row can be slipped into the chain's past or beside it (which would also leave the sealer
-- unable to link the next row).
DROP TRIGGER audit_events_no_replace;
CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events
WHEN EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

CREATE TRIGGER audit_events_link_next BEFORE INSERT ON audit_events
WHEN NEW.seq IS NOT NULL OR NEW.prev_hash IS NOT NULL OR NEW.hash IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only')
    WHERE NOT EXISTS (SELECT 1 FROM audit_chain_heads h
                      WHERE h.tenant = NEW.tenant AND NEW.seq = h.seq + 1
                        AND NEW.prev_hash = h.hash AND NEW.hash IS NOT NULL);
    UPDATE audit_chain_heads SET seq = NEW.seq, hash = NEW.hash WHERE tenant = NEW.tenant;
END;
