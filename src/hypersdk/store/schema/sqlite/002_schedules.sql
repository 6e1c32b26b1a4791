-- Schedules, their counters and their recent runs. Times are UNIX seconds (REAL), UTC.
CREATE TABLE schedules (
    id             TEXT PRIMARY KEY,
    definition     TEXT NOT NULL,             -- JSON: name, description, cron, timezone, missed_runs,
                                              -- job_template (secrets as "***")
    secrets        BLOB,                      -- Fernet token of the template's {"source.password": ...}
    enabled        INTEGER NOT NULL,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    last_run       REAL,
    next_run       REAL,                      -- a stored next_run in the past is a run missed while down
    run_count      INTEGER NOT NULL DEFAULT 0,
    last_job_ids   TEXT NOT NULL DEFAULT '[]',
    succeeded_runs INTEGER NOT NULL DEFAULT 0,
    failed_runs    INTEGER NOT NULL DEFAULT 0,
    skipped_runs   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE schedule_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    trigger     TEXT NOT NULL,                -- cron | trigger | catch_up
    started_at  REAL NOT NULL,
    finished_at REAL,
    outcome     TEXT NOT NULL,                -- running | succeeded | failed | skipped
    job_ids     TEXT NOT NULL DEFAULT '[]',
    reason      TEXT
);
CREATE INDEX schedule_runs_by_schedule ON schedule_runs (schedule_id, id);
CREATE INDEX schedule_runs_open ON schedule_runs (outcome) WHERE outcome = 'running';
