-- Nodes: the daemons sharing this database (one, with SQLite), and which of them runs each job.
CREATE TABLE nodes (
    name           TEXT PRIMARY KEY,   -- node_name
    instance       TEXT NOT NULL,      -- the daemon process now holding the name (a new one per start)
    host           TEXT NOT NULL,      -- where that process runs, and its pid: a restart on the same
    pid            INTEGER NOT NULL,   -- host can tell that its predecessor is gone without waiting
    state          TEXT NOT NULL,      -- up | stopped | lost (its lease expired: its jobs were taken over)
    started_at     REAL NOT NULL,
    last_heartbeat REAL NOT NULL
);
ALTER TABLE jobs ADD COLUMN node TEXT;   -- the name of the node that runs or ran the job
ALTER TABLE jobs ADD COLUMN owner TEXT;  -- the instance running it: a running job's writes are conditional on it
CREATE INDEX jobs_running_by_owner ON jobs (owner) WHERE status = 'running';
