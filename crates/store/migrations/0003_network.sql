-- Network (Neutron v2.0) tables. Timestamps are BIGINT microseconds since
-- the Unix epoch; lists that are only ever read and written whole (allocation
-- pools, DNS servers, host routes, allowed address pairs, extra routes) are
-- JSON documents in TEXT. Everything that needs a constraint — addresses,
-- MACs, segments, security-group membership — has its own column or table.
--
-- Version 0003 leaves 0002 to the image service's branch: sqlx applies every
-- migration it has not applied yet whatever its number, so the order in
-- which branches merge does not matter (see store's tests).

-- Bumped by every network write, first statement of the transaction: it
-- serializes network writes (the row is the lock) and tells node agents
-- that something changed.
CREATE TABLE network_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO network_revision (id, revision) VALUES (1, 0);

CREATE TABLE network (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    admin_state_up BOOLEAN NOT NULL,
    status TEXT NOT NULL,
    shared BOOLEAN NOT NULL,
    external BOOLEAN NOT NULL,
    mtu BIGINT NOT NULL,
    network_type TEXT NOT NULL,
    physical_network TEXT,
    segmentation_id BIGINT,
    -- 'vxlan:1001', 'flat:physnet1', 'vlan:physnet1:100'; NULL for local:
    -- one network per segment.
    segment_key TEXT UNIQUE,
    port_security_enabled BOOLEAN NOT NULL,
    dns_domain TEXT NOT NULL,
    availability_zone_hints TEXT NOT NULL,
    -- Conntrack zone of this network on every host (1..65535).
    conntrack_zone BIGINT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revision_number BIGINT NOT NULL
);
CREATE INDEX network_project ON network(project_id);

CREATE TABLE subnet (
    id TEXT PRIMARY KEY,
    network_id TEXT NOT NULL REFERENCES network(id),
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    ip_version BIGINT NOT NULL,
    cidr TEXT NOT NULL,
    gateway_ip TEXT,
    enable_dhcp BOOLEAN NOT NULL,
    ipv6_ra_mode TEXT,
    ipv6_address_mode TEXT,
    allocation_pools TEXT NOT NULL,
    dns_nameservers TEXT NOT NULL,
    host_routes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revision_number BIGINT NOT NULL
);
CREATE INDEX subnet_network ON subnet(network_id);

CREATE TABLE port (
    id TEXT PRIMARY KEY,
    network_id TEXT NOT NULL REFERENCES network(id),
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    mac_address TEXT NOT NULL,
    admin_state_up BOOLEAN NOT NULL,
    status TEXT NOT NULL,
    device_owner TEXT NOT NULL,
    device_id TEXT NOT NULL,
    host_id TEXT NOT NULL,
    vnic_type TEXT NOT NULL,
    binding_profile TEXT NOT NULL,
    port_security_enabled BOOLEAN NOT NULL,
    allowed_address_pairs TEXT NOT NULL,
    dns_name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revision_number BIGINT NOT NULL,
    UNIQUE (network_id, mac_address)
);
CREATE INDEX port_device ON port(device_id);
CREATE INDEX port_host ON port(host_id);

-- A fixed IP of a port. UNIQUE (network_id, ip_address) is what makes
-- concurrent allocations safe: a second writer of the same address fails.
CREATE TABLE ip_allocation (
    port_id TEXT NOT NULL REFERENCES port(id) ON DELETE CASCADE,
    subnet_id TEXT NOT NULL REFERENCES subnet(id),
    network_id TEXT NOT NULL,
    ip_address TEXT NOT NULL,
    UNIQUE (network_id, ip_address)
);
CREATE INDEX ip_allocation_port ON ip_allocation(port_id);
CREATE INDEX ip_allocation_subnet ON ip_allocation(subnet_id);

CREATE TABLE security_group (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revision_number BIGINT NOT NULL
);
CREATE INDEX security_group_project ON security_group(project_id);

-- One default group per project, created on first use.
CREATE TABLE default_security_group (
    project_id TEXT PRIMARY KEY,
    security_group_id TEXT NOT NULL UNIQUE REFERENCES security_group(id) ON DELETE CASCADE
);

CREATE TABLE security_group_rule (
    id TEXT PRIMARY KEY,
    security_group_id TEXT NOT NULL REFERENCES security_group(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    ethertype TEXT NOT NULL,
    protocol TEXT,
    port_range_min BIGINT,
    port_range_max BIGINT,
    remote_ip_prefix TEXT,
    remote_group_id TEXT REFERENCES security_group(id) ON DELETE CASCADE,
    description TEXT NOT NULL,
    -- The rule's meaning in one string (protocol as a number, prefix
    -- normalized): two rules that mean the same collide here.
    fingerprint TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revision_number BIGINT NOT NULL
);
CREATE INDEX security_group_rule_group ON security_group_rule(security_group_id);
CREATE INDEX security_group_rule_remote ON security_group_rule(remote_group_id);

CREATE TABLE port_security_group (
    port_id TEXT NOT NULL REFERENCES port(id) ON DELETE CASCADE,
    security_group_id TEXT NOT NULL REFERENCES security_group(id),
    PRIMARY KEY (port_id, security_group_id)
);
CREATE INDEX port_security_group_group ON port_security_group(security_group_id);

CREATE TABLE router (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    admin_state_up BOOLEAN NOT NULL,
    status TEXT NOT NULL,
    gw_port_id TEXT REFERENCES port(id),
    enable_snat BOOLEAN NOT NULL,
    routes TEXT NOT NULL,
    availability_zone_hints TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revision_number BIGINT NOT NULL
);
CREATE INDEX router_project ON router(project_id);

CREATE TABLE floatingip (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    floating_network_id TEXT NOT NULL REFERENCES network(id),
    floating_port_id TEXT NOT NULL REFERENCES port(id),
    floating_ip_address TEXT NOT NULL,
    port_id TEXT REFERENCES port(id),
    fixed_ip_address TEXT,
    router_id TEXT REFERENCES router(id),
    status TEXT NOT NULL,
    description TEXT NOT NULL,
    dns_name TEXT NOT NULL,
    dns_domain TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revision_number BIGINT NOT NULL,
    -- One floating IP per fixed address.
    UNIQUE (port_id, fixed_ip_address)
);
CREATE INDEX floatingip_router ON floatingip(router_id);

-- Tags of any network resource (`/v2.0/{resources}/{id}/tags`).
CREATE TABLE network_tag (
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (resource_type, resource_id, tag)
);

-- Per-project quota overrides; defaults come from the settings.
CREATE TABLE network_quota (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);

-- Hosts running the node agent: when each was first and last heard from
-- (watch or report calls), and its tunnel (VXLAN underlay) address.
CREATE TABLE network_host (
    host TEXT PRIMARY KEY,
    tunnel_ip TEXT,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- Port events for compute to wait on (`network-vif-plugged`, …).
CREATE TABLE port_event (
    id TEXT PRIMARY KEY,
    port_id TEXT NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    host TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX port_event_port ON port_event(port_id, created_at);
