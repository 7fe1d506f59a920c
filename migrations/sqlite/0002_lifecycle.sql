-- What the gateway knows of a job after kick-off: its last upstream status, its manifest, its claim by a
-- poller, and the notification owed to its source.
ALTER TABLE jobs ADD COLUMN progress TEXT;
ALTER TABLE jobs ADD COLUMN retry_after_secs INTEGER;
ALTER TABLE jobs ADD COLUMN next_poll_at TEXT;
ALTER TABLE jobs ADD COLUMN last_polled_at TEXT;
ALTER TABLE jobs ADD COLUMN poll_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN manifest TEXT;
ALTER TABLE jobs ADD COLUMN expires TEXT;
ALTER TABLE jobs ADD COLUMN claimed_by TEXT;
ALTER TABLE jobs ADD COLUMN claim_until TEXT;
ALTER TABLE jobs ADD COLUMN notify_state TEXT;
ALTER TABLE jobs ADD COLUMN notify_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN notify_next_at TEXT;

CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_poll_at);
CREATE INDEX IF NOT EXISTS jobs_notify ON jobs (notify_state, notify_next_at);
