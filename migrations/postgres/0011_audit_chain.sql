-- Tamper evidence for the audit trail.
--
-- Each tenant's rows form a hash chain: `seq` counts 1, 2, 3 … per tenant with no gap, and
-- `hash` is SHA-256 over the row's fields and `prev_hash`, the hash of the tenant's previous row
-- ('' before the first). `audit_chain_heads` holds each tenant's last seq and hash; it is
-- updated (row-locked) in the transaction that inserts the row, which serialises a tenant's
-- inserts. `telemental audit verify` recomputes every chain: an altered row breaks its own
-- hash, a removed row leaves a gap in `seq` and a `prev_hash` that no longer matches, a removed
-- tail disagrees with the head.
--
-- Rows written before this migration have no chain (seq IS NULL); verify counts them.
ALTER TABLE audit_events ADD COLUMN seq bigint;
ALTER TABLE audit_events ADD COLUMN prev_hash text;
ALTER TABLE audit_events ADD COLUMN hash text;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_chained
    CHECK (seq IS NOT NULL AND prev_hash IS NOT NULL AND hash IS NOT NULL) NOT VALID;
CREATE UNIQUE INDEX audit_events_by_chain ON audit_events (tenant, seq);

CREATE TABLE audit_chain_heads (
    tenant text PRIMARY KEY,
    seq    bigint NOT NULL,
    hash   text NOT NULL
);

-- `telemental audit archive` (never the service) moves rows past the retention to a file. It
-- first writes an anchor, the seq and hash of the last row it removes, so the chain of what
-- remains still verifies from the anchor. Rows may only be deleted under an anchor.
CREATE TABLE audit_archive_anchors (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    upto_seq    bigint NOT NULL,
    hash        text NOT NULL,
    rows        bigint NOT NULL,
    archived_at timestamptz NOT NULL
);
CREATE INDEX audit_archive_anchors_by_tenant ON audit_archive_anchors (tenant, upto_seq);

-- UPDATE stays refused (the function of 0001); DELETE only of archived rows; TRUNCATE never.
DROP TRIGGER audit_events_no_change ON audit_events;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE FUNCTION audit_events_delete_archived() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM audit_archive_anchors a
               WHERE a.tenant = OLD.tenant AND (OLD.seq IS NULL OR a.upto_seq >= OLD.seq)) THEN
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
    IF TG_OP = 'UPDATE' AND NEW.tenant = OLD.tenant AND NEW.seq BETWEEN OLD.seq AND OLD.seq + 1 THEN
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
