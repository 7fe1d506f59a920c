-- One row per accepted (or being-accepted) kick-off. (source_key, log_id, fingerprint) makes a retried
-- envelope idempotent; the fingerprint digests destination, environment and the upstream request.
CREATE TABLE IF NOT EXISTS jobs (
    id                  TEXT PRIMARY KEY NOT NULL,
    source_key          TEXT NOT NULL,
    log_id              TEXT NOT NULL,
    attempt_id          TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 1,
    destination         TEXT NOT NULL,
    environment         TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    group_id            TEXT,
    fingerprint         TEXT NOT NULL,
    state               TEXT NOT NULL,
    upstream_status_url TEXT,
    error_code          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (source_key, log_id, fingerprint)
);

CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, updated_at);

-- Every upstream kick-off attempt of a job, for "what happened to message X?".
CREATE TABLE IF NOT EXISTS job_attempts (
    job_id          TEXT NOT NULL REFERENCES jobs (id),
    attempt_id      TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    outcome         TEXT NOT NULL,
    upstream_status INTEGER,
    error_code      TEXT,
    PRIMARY KEY (job_id, attempt_id)
);
