-- The message log: every partner request that reached routing and every upstream call, metadata only
-- (no bodies, patient references, tokens or URLs). Pruned after [log] retention_days.
CREATE TABLE IF NOT EXISTS message_log (
    seq             BIGSERIAL PRIMARY KEY,
    kind            TEXT NOT NULL,
    log_id          UUID NOT NULL,
    attempt_id      UUID NOT NULL,
    at              TIMESTAMPTZ NOT NULL,
    source          TEXT,
    destination     TEXT,
    environment     TEXT,
    event_type      TEXT,
    method          TEXT,
    route           TEXT NOT NULL,
    gateway_status  INTEGER,
    upstream_status INTEGER,
    error_code      TEXT,
    duration_ms     DOUBLE PRECISION NOT NULL,
    job_id          UUID
);

CREATE INDEX IF NOT EXISTS message_log_at ON message_log (at);
CREATE INDEX IF NOT EXISTS message_log_log_id ON message_log (log_id);
CREATE INDEX IF NOT EXISTS message_log_job_id ON message_log (job_id);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
