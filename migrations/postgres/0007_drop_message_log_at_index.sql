-- message_log_at_seq (at, seq) serves everything message_log_at (at) did (the time range filters,
-- pruning oldest first), so that index was one more that every message-log record paid for.
DROP INDEX IF EXISTS message_log_at;
