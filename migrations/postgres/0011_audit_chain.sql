-- Tamper evidence for the audit trail.
--
-- Each tenant's rows form a hash chain: `seq` counts 1, 2, 3 … per tenant with no gap, and
-- `hash` is SHA-256 over the row's fields and `prev_hash`, the hash of the tenant's previous
-- row ('' before the first). Requests insert rows unsealed (seq, prev_hash and hash NULL: one
-- plain INSERT, so a tenant's requests never queue on the chain); the service seals them in
-- the background, oldest first, within about a second, holding the row lock of the tenant's
-- `audit_chain_heads` row (its last seq and hash), so that instances sealing at once take
-- turns. Sealing sets the three chain fields once and changes nothing else.
-- `telemental audit verify` recomputes every chain: an altered row breaks its own hash, a
-- removed row leaves a gap in `seq` and a `prev_hash` that no longer matches, a removed tail
-- disagrees with the head. Rows from before this migration are sealed the same way.
ALTER TABLE audit_events ADD COLUMN seq bigint;
ALTER TABLE audit_events ADD COLUMN prev_hash text;
ALTER TABLE audit_events ADD COLUMN hash text;
CREATE UNIQUE INDEX audit_events_by_chain ON audit_events (tenant, seq);
-- The sealer's queue.
CREATE INDEX audit_events_unsealed ON audit_events (tenant, id) WHERE seq IS NULL;

CREATE TABLE audit_chain_heads (
    tenant text PRIMARY KEY,
    seq    bigint NOT NULL,
    hash   text NOT NULL
);

-- `telemental audit archive` (never the service) moves sealed rows past the retention to a
-- file. It first writes an anchor, the seq and hash of the last row it removes, so the chain
-- of what remains still verifies from the anchor. Rows may only be deleted under an anchor.
CREATE TABLE audit_archive_anchors (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    upto_seq    bigint NOT NULL,
    hash        text NOT NULL,
    rows        bigint NOT NULL,
    archived_at timestamptz NOT NULL
);
CREATE INDEX audit_archive_anchors_by_tenant ON audit_archive_anchors (tenant, upto_seq);

-- Chain fields come together (a row inserted with a made-up seq and hash breaks the chain and
-- shows in `audit verify`; no per-row trigger on the request path).
ALTER TABLE audit_events ADD CONSTRAINT audit_events_chain_fields_together
    CHECK (seq IS NOT NULL OR (prev_hash IS NULL AND hash IS NULL));

-- UPDATE only to seal a row once; DELETE only of sealed rows under an anchor; never TRUNCATE.
DROP TRIGGER audit_events_no_change ON audit_events;
CREATE FUNCTION audit_events_seal_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL
       AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
       AND (NEW.id, NEW.tenant, NEW.at, NEW.actor, NEW.action, NEW.resource_type,
            NEW.resource_id, NEW.subject, NEW.request_id, NEW.outcome)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.tenant, OLD.at, OLD.actor, OLD.action, OLD.resource_type,
            OLD.resource_id, OLD.subject, OLD.request_id, OLD.outcome) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_seal_once();
CREATE FUNCTION audit_events_delete_archived() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq IS NOT NULL AND EXISTS (SELECT 1 FROM audit_archive_anchors a
               WHERE a.tenant = OLD.tenant AND a.upto_seq >= OLD.seq) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_delete_archived();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

CREATE FUNCTION audit_chain_heads_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.tenant = OLD.tenant AND NEW.seq >= OLD.seq THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_chain_heads only moves forward';
END $$;
CREATE TRIGGER audit_chain_heads_forward BEFORE UPDATE OR DELETE ON audit_chain_heads
FOR EACH ROW EXECUTE FUNCTION audit_chain_heads_forward();
CREATE TRIGGER audit_chain_heads_no_truncate BEFORE TRUNCATE ON audit_chain_heads
FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_heads_forward();

CREATE FUNCTION audit_archive_anchors_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit_archive_anchors is append-only'; END $$;
CREATE TRIGGER audit_archive_anchors_no_change BEFORE UPDATE OR DELETE ON audit_archive_anchors
FOR EACH ROW EXECUTE FUNCTION audit_archive_anchors_append_only();
CREATE TRIGGER audit_archive_anchors_no_truncate BEFORE TRUNCATE ON audit_archive_anchors
FOR EACH STATEMENT EXECUTE FUNCTION audit_archive_anchors_append_only();
