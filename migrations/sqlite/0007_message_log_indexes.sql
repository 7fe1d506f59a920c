-- The message log at scale (issue 11): the admin API's and the dashboard's filters, newest first, each
-- served by an index scan in the log's order (SQLite indexes end in the rowid, which is seq) rather
-- than by reading every record. Counts stop at 10,000 and pages follow a cursor, so no query reads
-- more than a page's worth of a filter's records.
CREATE INDEX IF NOT EXISTS message_log_kind_at ON message_log (kind, at);
CREATE INDEX IF NOT EXISTS message_log_source_at ON message_log (source, at);
CREATE INDEX IF NOT EXISTS message_log_destination_at ON message_log (destination, at);
