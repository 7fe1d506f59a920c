-- jobs_notify holds only the jobs with a notification waiting to be sent: the one query that reads it
-- (the poller's claim: `notify_state = 'pending' AND notify_next_at <= $3 ORDER BY notify_next_at`)
-- never wants any other. As (notify_state, notify_next_at) over every job, each reservation inserted
-- an entry for a job with nothing to notify, and so did each outcome (an update that changes an
-- indexed column writes a new entry in every index, this one included).
DROP INDEX IF EXISTS jobs_notify;
CREATE INDEX IF NOT EXISTS jobs_notify ON jobs (notify_next_at) WHERE notify_state = 'pending';
