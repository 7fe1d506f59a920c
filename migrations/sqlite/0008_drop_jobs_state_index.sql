-- jobs_due (state, next_poll_at) serves every query by state (counts by state, in-flight reservations
-- by age), so jobs_state (state, updated_at) was one more B-tree that every reservation inserted into
-- and every outcome rewrote twice, inside the commit the partner waits for.
DROP INDEX IF EXISTS jobs_state;
