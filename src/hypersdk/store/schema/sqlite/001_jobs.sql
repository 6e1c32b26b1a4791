-- Jobs and their history. Times are UNIX seconds (REAL), UTC.
CREATE TABLE jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order: the FIFO queue
    id           TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    definition   TEXT NOT NULL,                      -- JSON, secrets as "***"
    secrets      BLOB,                               -- Fernet token of {"source.password": ...}
    progress     TEXT NOT NULL,                      -- JSON
    result       TEXT,                               -- JSON
    error        TEXT,
    created_at   REAL NOT NULL,
    started_at   REAL,
    completed_at REAL,
    updated_at   REAL NOT NULL
);
-- newest-first listings, with and without a status filter
CREATE INDEX jobs_by_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_by_status_created ON jobs (status, created_at DESC, id DESC);
-- the next pending job in submission order
CREATE INDEX jobs_pending_fifo ON jobs (seq) WHERE status = 'pending';

CREATE TABLE job_history (
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at      REAL NOT NULL,
    status  TEXT NOT NULL,
    stage   TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX job_history_by_job ON job_history (job_id, at);
