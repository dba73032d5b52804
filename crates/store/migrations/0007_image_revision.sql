-- Image writes are atomic against each other (issue 10).
--
-- `revision` counts the writes to an image row: a write transaction reads
-- the row after its first statement has locked it, and its final update is
-- guarded by the revision it read, so a lost race is a 409, never a lost
-- update. `reserved` is the bytes an upload, a staged file or an import in
-- progress has claimed against the owner's `image_size_total` quota: usage
-- is SUM(size) + SUM(reserved).
ALTER TABLE image ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE image ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0;

-- One row per owning project, written first by every transaction that
-- claims quota (an image's creation, bytes of data), so that the usage it
-- reads next stays true until it commits (network_revision's pattern, per
-- project).
CREATE TABLE image_owner_lock (
    owner TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);
