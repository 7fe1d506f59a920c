-- The partner's kick-off as the gateway received it (operation path and accepted parameters, no patient
-- ids), so a manifest's `request` is the gateway's own URL, never the EHR's query.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS request TEXT;
-- Secrets the gateway makes up once and keeps (the key that seals attachment links), shared by replicas.
CREATE TABLE IF NOT EXISTS gateway_keys (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
