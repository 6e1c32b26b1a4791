-- What each job made outside the database (files, volumes, domains, networks), recorded before it is
-- made: removed when the job fails or is cancelled (after a crash, at the next start), kept on
-- purpose and listed in its result (a copy to resume, a domain to look at) until discarded or swept,
-- forgotten when the job completes (then they are its result).
CREATE TABLE job_leftovers (
    seq        BIGSERIAL PRIMARY KEY,          -- the order they were made in (removed newest first)
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    what       TEXT NOT NULL,                 -- JSON: {"kind": "file", "path": ...}, {"kind": "domain", ...}
    kept       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (job_id, what)
);
