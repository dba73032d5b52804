-- Image (Glance v2) tables. Timestamps are BIGINT microseconds since the
-- Unix epoch. Deleted images are removed, not soft-deleted: the API answers
-- 404 for them either way and nothing reads them back.

CREATE TABLE image (
    id TEXT PRIMARY KEY,
    name TEXT,
    status TEXT NOT NULL,
    visibility TEXT NOT NULL,
    protected BOOLEAN NOT NULL,
    os_hidden BOOLEAN NOT NULL,
    owner TEXT,
    disk_format TEXT,
    container_format TEXT,
    size BIGINT,
    virtual_size BIGINT,
    checksum TEXT,
    os_hash_algo TEXT,
    os_hash_value TEXT,
    min_disk BIGINT NOT NULL,
    min_ram BIGINT NOT NULL,
    -- Where the data is: the store's id (e.g. 'file') once data is stored.
    store TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX image_owner ON image(owner);
CREATE INDEX image_visibility ON image(visibility);

CREATE TABLE image_property (
    image_id TEXT NOT NULL REFERENCES image(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (image_id, name)
);

CREATE TABLE image_tag (
    image_id TEXT NOT NULL REFERENCES image(id) ON DELETE CASCADE,
    value TEXT NOT NULL,
    PRIMARY KEY (image_id, value)
);

CREATE TABLE image_member (
    image_id TEXT NOT NULL REFERENCES image(id) ON DELETE CASCADE,
    member TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (image_id, member)
);
CREATE INDEX image_member_member ON image_member(member);

-- Import tasks (Glance's `api_image_import` tasks), kept so that
-- GET /v2/images/{id}/tasks can say why an import failed.
CREATE TABLE image_task (
    id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES image(id) ON DELETE CASCADE,
    owner TEXT,
    status TEXT NOT NULL,
    method TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX image_task_image ON image_task(image_id);
