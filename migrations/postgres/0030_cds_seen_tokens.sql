-- CDS Hooks tokens already used, by issuer and `jti`, kept until the token expires (plus the
-- clock leeway): a replayed token is refused, also when the replay reaches another instance
-- on the same database. The primary key decides between concurrent uses; expired rows are
-- taken over by a new use and pruned in the background.
CREATE TABLE cds_seen_tokens (
    issuer     text NOT NULL,
    jti        text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX cds_seen_tokens_by_expiry ON cds_seen_tokens (expires_at);
