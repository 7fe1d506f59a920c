-- One row per accepted (or being-accepted) kick-off. (source_key, log_id, fingerprint) makes a retried
-- envelope idempotent; the fingerprint digests destination, environment and the upstream request.
CREATE TABLE IF NOT EXISTS jobs (
    id                  UUID PRIMARY KEY,
    source_key          TEXT NOT NULL,
    log_id              UUID NOT NULL,
    attempt_id          UUID NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 1,
    destination         TEXT NOT NULL,
    environment         TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    group_id            TEXT,
    fingerprint         TEXT NOT NULL,
    state               TEXT NOT NULL,
    upstream_status_url TEXT,
    error_code          TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    progress            TEXT,
    retry_after_secs    BIGINT,
    next_poll_at        TIMESTAMPTZ,
    last_polled_at      TIMESTAMPTZ,
    poll_failures       BIGINT NOT NULL DEFAULT 0,
    manifest            TEXT,
    expires             TEXT,
    claimed_by          TEXT,
    claim_until         TIMESTAMPTZ,
    notify_state        TEXT,
    notify_attempts     BIGINT NOT NULL DEFAULT 0,
    notify_next_at      TIMESTAMPTZ,
    UNIQUE (source_key, log_id, fingerprint)
);

CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_poll_at);
CREATE INDEX IF NOT EXISTS jobs_notify ON jobs (notify_state, notify_next_at);

CREATE TABLE IF NOT EXISTS job_attempts (
    job_id          UUID NOT NULL REFERENCES jobs (id),
    attempt_id      UUID NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    outcome         TEXT NOT NULL,
    upstream_status INTEGER,
    error_code      TEXT,
    PRIMARY KEY (job_id, attempt_id)
);
