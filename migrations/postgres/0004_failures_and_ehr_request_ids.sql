-- What the EHR said when it reported an export failed (status and issues, as the partner sees them), so
-- every later poll answers the same.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS failure TEXT;
-- The EHR's own id for an upstream call (Oracle Health's opc-request-id, or X-Request-ID), for the
-- operator to quote to the vendor.
ALTER TABLE message_log ADD COLUMN IF NOT EXISTS upstream_request_id TEXT;
