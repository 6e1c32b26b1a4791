-- Facts about the database itself: the fingerprint of the secrets key every node must hold.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Datastore streams in use, per vCenter, across every node: limits.streams_per_vcenter holds for
-- the cluster. A grant counts only while its job runs under the instance that took it.
CREATE TABLE stream_grants (
    id          TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    vcenter_key TEXT NOT NULL,
    streams     INTEGER NOT NULL
);
CREATE INDEX stream_grants_by_vcenter ON stream_grants (vcenter_key);
