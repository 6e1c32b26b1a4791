-- Webhooks added through the API, and every webhook's deliveries. Times are UNIX seconds (REAL), UTC.
CREATE TABLE webhooks (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order GET /webhooks lists them in
    id          TEXT NOT NULL UNIQUE,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,                      -- JSON list
    enabled     INTEGER NOT NULL,
    timeout     REAL NOT NULL,
    retry_count INTEGER NOT NULL,
    secrets     BLOB,                               -- Fernet token of {"headers": JSON, "secret": ...}
    created_at  REAL NOT NULL
);

CREATE TABLE webhook_deliveries (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,   -- delivery order per webhook
    id         TEXT NOT NULL UNIQUE,                -- X-Hypersdk-Delivery
    hook_key   TEXT NOT NULL,                       -- a config webhook's key or an API webhook's id
    event      TEXT NOT NULL,
    body       BLOB NOT NULL,                       -- the exact bytes sent (and signed)
    state      TEXT NOT NULL,                       -- pending | delivered | failed | dropped
    attempts   TEXT NOT NULL DEFAULT '[]',          -- JSON list of {at, duration, status_code, error}
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (hook_key, seq);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (seq) WHERE state = 'pending';
