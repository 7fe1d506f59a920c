-- Client-assertion ids already used at /auth/token, shared by every replica until the assertion expires.
CREATE TABLE IF NOT EXISTS assertion_jtis (
    source_key TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (source_key, jti)
);
