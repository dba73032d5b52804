-- Identity (Keystone v3) tables. Timestamps are BIGINT microseconds since
-- the Unix epoch; JSON documents are TEXT. Global roles use domain_id = ''
-- rather than NULL so that UNIQUE(domain_id, name) holds on every backend.

CREATE TABLE identity_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO identity_revision (id, revision) VALUES (1, 0);

CREATE TABLE domain (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    enabled BOOLEAN NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);

CREATE TABLE domain_tag (
    domain_id TEXT NOT NULL REFERENCES domain(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    PRIMARY KEY (domain_id, name)
);

CREATE TABLE project (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL REFERENCES domain(id),
    parent_id TEXT REFERENCES project(id),
    description TEXT NOT NULL DEFAULT '',
    enabled BOOLEAN NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    UNIQUE (domain_id, name)
);
CREATE INDEX project_parent ON project(parent_id);

CREATE TABLE project_tag (
    project_id TEXT NOT NULL REFERENCES project(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    PRIMARY KEY (project_id, name)
);

CREATE TABLE identity_user (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL REFERENCES domain(id),
    enabled BOOLEAN NOT NULL,
    default_project_id TEXT,
    password_hash TEXT,
    password_created_at BIGINT,
    failed_auth_count BIGINT NOT NULL DEFAULT 0,
    failed_auth_at BIGINT,
    extra TEXT NOT NULL DEFAULT '{}',
    options TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    UNIQUE (domain_id, name)
);

CREATE TABLE identity_group (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL REFERENCES domain(id),
    description TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    UNIQUE (domain_id, name)
);

CREATE TABLE group_member (
    group_id TEXT NOT NULL REFERENCES identity_group(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES identity_user(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_member_user ON group_member(user_id);

CREATE TABLE role (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}',
    options TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    UNIQUE (domain_id, name)
);

CREATE TABLE implied_role (
    prior_role_id TEXT NOT NULL REFERENCES role(id) ON DELETE CASCADE,
    implied_role_id TEXT NOT NULL REFERENCES role(id) ON DELETE CASCADE,
    PRIMARY KEY (prior_role_id, implied_role_id)
);

-- One row per grant. actor_type: 'user' | 'group'. target_type: 'project' |
-- 'domain' | 'system' (target_id 'all'). Actors and targets are polymorphic,
-- so their deletion removes grants in the same transaction in code.
CREATE TABLE assignment (
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    role_id TEXT NOT NULL REFERENCES role(id) ON DELETE CASCADE,
    inherited BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (actor_type, actor_id, target_type, target_id, role_id, inherited)
);
CREATE INDEX assignment_target ON assignment(target_type, target_id);
CREATE INDEX assignment_role ON assignment(role_id);

CREATE TABLE region (
    id TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    parent_region_id TEXT REFERENCES region(id),
    extra TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);

CREATE TABLE service (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    enabled BOOLEAN NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);

CREATE TABLE endpoint (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES service(id) ON DELETE CASCADE,
    interface TEXT NOT NULL,
    url TEXT NOT NULL,
    region_id TEXT REFERENCES region(id),
    enabled BOOLEAN NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    -- Endpoints the binary registers for its own services; their URL follows
    -- --public-url at every start.
    managed BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE application_credential (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES identity_user(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES project(id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    expires_at BIGINT,
    unrestricted BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (user_id, name)
);

CREATE TABLE application_credential_role (
    application_credential_id TEXT NOT NULL REFERENCES application_credential(id) ON DELETE CASCADE,
    role_id TEXT NOT NULL,
    PRIMARY KEY (application_credential_id, role_id)
);

-- A revocation event invalidates every token matching all of its non-NULL
-- columns and issued at or before issued_before. Events older than the
-- longest token lifetime are pruned.
CREATE TABLE revocation_event (
    id TEXT PRIMARY KEY,
    user_id TEXT,
    project_id TEXT,
    domain_id TEXT,
    audit_id TEXT,
    audit_chain_id TEXT,
    application_credential_id TEXT,
    issued_before BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX revocation_event_revoked_at ON revocation_event(revoked_at);
