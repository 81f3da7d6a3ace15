-- Encryption at rest (src/crypto.rs). One canary per key id: a known text sealed with that
-- key when it first became current. /readyz opens the canary of every configured key: a key
-- id whose bytes were changed (every value it sealed would no longer open) is not ready.
-- Nothing personal is stored here.
CREATE TABLE encryption_canaries (
    key_id     TEXT PRIMARY KEY NOT NULL,
    sealed     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
