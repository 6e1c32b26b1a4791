-- The vCenter each job reads from, normalized by the daemon (host:port), for limits.jobs_per_vcenter.
ALTER TABLE jobs ADD COLUMN vcenter_key TEXT NOT NULL DEFAULT '';
-- Jobs queued before this version: their vCenter as it was spelled (lower case).
UPDATE jobs SET vcenter_key = lower(coalesce(json_extract(definition, '$.source.vcenter'),
                                             json_extract(definition, '$.source.vcenter_url'), ''));
