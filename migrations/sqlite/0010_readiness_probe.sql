-- /readyz and start-up write this one row (and commit) to prove the database can be written:
-- a read-only file, a read-only mount or a full disk answers 503 instead of 500s on every write.
CREATE TABLE readiness_probe (
    id         INTEGER PRIMARY KEY NOT NULL,
    checked_at TEXT NOT NULL
);
