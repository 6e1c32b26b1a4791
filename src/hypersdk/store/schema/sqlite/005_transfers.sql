-- Checkpoints of disk transfers: what a resume starts from and what verification compares with.
CREATE TABLE transfer_disks (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    disk   INTEGER NOT NULL,
    info   TEXT NOT NULL,  -- JSON: the source's identity, chunk size, the target written
    PRIMARY KEY (job_id, disk)
);
CREATE TABLE transfer_chunks (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    disk   INTEGER NOT NULL,
    chunk  INTEGER NOT NULL,
    hash   TEXT NOT NULL,  -- of the chunk as read from the source
    zero   INTEGER NOT NULL,
    PRIMARY KEY (job_id, disk, chunk)
);
