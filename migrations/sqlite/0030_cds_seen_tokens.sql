-- CDS Hooks tokens already used, by issuer and `jti`, kept until the token expires (plus the
-- clock leeway): a replayed token is refused, also when the replay reaches another instance
-- on the same database. The primary key decides between concurrent uses; expired rows are
-- taken over by a new use and pruned in the background.
CREATE TABLE cds_seen_tokens (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at TEXT NOT NULL,           -- RFC 3339, fixed width: compares as text
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX cds_seen_tokens_by_expiry ON cds_seen_tokens (expires_at);
