-- The whole schema as of SQLite's version 5, for PostgreSQL. Times are UNIX seconds, UTC.
CREATE TABLE jobs (
    seq          BIGSERIAL PRIMARY KEY,             -- submission order: the FIFO queue
    id           TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    definition   TEXT NOT NULL,                     -- JSON, secrets as "***"
    secrets      BYTEA,                             -- Fernet token of {"source.password": ...}
    progress     TEXT NOT NULL,                     -- JSON
    result       TEXT,                              -- JSON
    error        TEXT,
    created_at   DOUBLE PRECISION NOT NULL,
    started_at   DOUBLE PRECISION,
    completed_at DOUBLE PRECISION,
    updated_at   DOUBLE PRECISION NOT NULL,
    vcenter_key  TEXT NOT NULL DEFAULT ''           -- host:port, for limits.jobs_per_vcenter
);
CREATE INDEX jobs_by_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_by_status_created ON jobs (status, created_at DESC, id DESC);
CREATE INDEX jobs_pending_fifo ON jobs (seq) WHERE status = 'pending';

CREATE TABLE job_history (
    seq     BIGSERIAL PRIMARY KEY,
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at      DOUBLE PRECISION NOT NULL,
    status  TEXT NOT NULL,
    stage   TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX job_history_by_job ON job_history (job_id, at);

CREATE TABLE schedules (
    id             TEXT PRIMARY KEY,
    definition     TEXT NOT NULL,
    secrets        BYTEA,
    enabled        BOOLEAN NOT NULL,
    created_at     DOUBLE PRECISION NOT NULL,
    updated_at     DOUBLE PRECISION NOT NULL,
    last_run       DOUBLE PRECISION,
    next_run       DOUBLE PRECISION,
    run_count      INTEGER NOT NULL DEFAULT 0,
    last_job_ids   TEXT NOT NULL DEFAULT '[]',
    succeeded_runs INTEGER NOT NULL DEFAULT 0,
    failed_runs    INTEGER NOT NULL DEFAULT 0,
    skipped_runs   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE schedule_runs (
    id          BIGSERIAL PRIMARY KEY,
    schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    trigger     TEXT NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    outcome     TEXT NOT NULL,
    job_ids     TEXT NOT NULL DEFAULT '[]',
    reason      TEXT
);
CREATE INDEX schedule_runs_by_schedule ON schedule_runs (schedule_id, id);
CREATE INDEX schedule_runs_open ON schedule_runs (outcome) WHERE outcome = 'running';

CREATE TABLE webhooks (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    timeout     DOUBLE PRECISION NOT NULL,
    retry_count INTEGER NOT NULL,
    secrets     BYTEA,
    created_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE webhook_deliveries (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    hook_key   TEXT NOT NULL,
    event      TEXT NOT NULL,
    body       BYTEA NOT NULL,
    state      TEXT NOT NULL,
    attempts   TEXT NOT NULL DEFAULT '[]',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (hook_key, seq);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (seq) WHERE state = 'pending';

CREATE TABLE transfer_disks (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    disk   INTEGER NOT NULL,
    info   TEXT NOT NULL,
    PRIMARY KEY (job_id, disk)
);
CREATE TABLE transfer_chunks (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    disk   INTEGER NOT NULL,
    chunk  INTEGER NOT NULL,
    hash   TEXT NOT NULL,
    zero   BOOLEAN NOT NULL,
    PRIMARY KEY (job_id, disk, chunk)
);
