-- The message log at scale (issue 11): the admin API's and the dashboard's filters, newest first, each
-- served by an index scan in the log's order rather than by reading every record. Counts stop at
-- 10,000 and pages follow a cursor, so no query reads more than a page's worth of a filter's records.
CREATE INDEX IF NOT EXISTS message_log_kind_at ON message_log (kind, at, seq);
CREATE INDEX IF NOT EXISTS message_log_source_at ON message_log (source, at, seq);
CREATE INDEX IF NOT EXISTS message_log_destination_at ON message_log (destination, at, seq);
CREATE INDEX IF NOT EXISTS message_log_at_seq ON message_log (at, seq);
