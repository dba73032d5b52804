-- The network change journal: which rows of a host's desired state changed
-- in which revision, so that the controller brings its in-memory copy up to
-- date by reading what changed rather than every table (see
-- network::app::control). Kept by triggers, so no write path can forget it;
-- the triggers are the one part of the schema in SQLite's dialect (a
-- PostgreSQL backend writes the same rows from a PL/pgSQL trigger).
--
-- `revision` is the network revision of the write: every network write bumps
-- it first (network_revision), so a change row carries its transaction's
-- revision. Writes that do not bump it (port status reports, agent
-- heartbeats) touch no column a host's state reads, and fire nothing.
-- `kind`/`key` name what to reload: a port (its row, fixed IPs and
-- security-group bindings), or a whole small table.
CREATE TABLE network_change (
    revision BIGINT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (revision, kind, key)
);

-- Rows of revisions up to `change_floor` have been pruned: a copy older
-- than that reloads everything.
ALTER TABLE network_revision ADD COLUMN change_floor BIGINT NOT NULL DEFAULT 0;

CREATE TRIGGER network_change_network_insert AFTER INSERT ON network BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'network', NEW.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_network_update AFTER UPDATE ON network BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'network', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_network_delete AFTER DELETE ON network BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'network', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER network_change_subnet_insert AFTER INSERT ON subnet BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'subnet', NEW.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_subnet_update AFTER UPDATE ON subnet BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'subnet', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_subnet_delete AFTER DELETE ON subnet BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'subnet', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;

-- A port's status, and the timestamps and revision number a status report
-- bumps, are not part of any host's state.
CREATE TRIGGER network_change_port_insert AFTER INSERT ON port BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'port', NEW.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_port_update AFTER UPDATE OF
    network_id, project_id, name, description, mac_address, admin_state_up,
    device_owner, device_id, host_id, vnic_type, binding_profile,
    port_security_enabled, allowed_address_pairs, dns_name ON port BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'port', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_port_delete AFTER DELETE ON port BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'port', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER network_change_ip_allocation_insert AFTER INSERT ON ip_allocation BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'port', NEW.port_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_ip_allocation_update AFTER UPDATE ON ip_allocation BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'port', OLD.port_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'port', NEW.port_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_ip_allocation_delete AFTER DELETE ON ip_allocation BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'port', OLD.port_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER network_change_port_security_group_insert AFTER INSERT ON port_security_group BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'port', NEW.port_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_port_security_group_update AFTER UPDATE ON port_security_group BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'port', OLD.port_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'port', NEW.port_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_port_security_group_delete AFTER DELETE ON port_security_group BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'port', OLD.port_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER network_change_security_group_insert AFTER INSERT ON security_group BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'security_group', NEW.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_security_group_update AFTER UPDATE ON security_group BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'security_group', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_security_group_delete AFTER DELETE ON security_group BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'security_group', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER network_change_security_group_rule_insert AFTER INSERT ON security_group_rule BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'security_group', NEW.security_group_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_security_group_rule_update AFTER UPDATE ON security_group_rule BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'security_group', OLD.security_group_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'security_group', NEW.security_group_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_security_group_rule_delete AFTER DELETE ON security_group_rule BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'security_group', OLD.security_group_id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER network_change_router_insert AFTER INSERT ON router BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'router', NEW.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_router_update AFTER UPDATE ON router BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'router', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_router_delete AFTER DELETE ON router BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'router', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER network_change_floatingip_insert AFTER INSERT ON floatingip BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'floatingip', NEW.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_floatingip_update AFTER UPDATE ON floatingip BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'floatingip', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_floatingip_delete AFTER DELETE ON floatingip BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'floatingip', OLD.id FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;

-- Heartbeats rewrite heartbeat_at; only the tunnel address matters.
CREATE TRIGGER network_change_network_host_insert AFTER INSERT ON network_host WHEN NEW.tunnel_ip IS NOT NULL BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'host', NEW.host FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_network_host_update AFTER UPDATE OF tunnel_ip ON network_host BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'host', OLD.host FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER network_change_network_host_delete AFTER DELETE ON network_host BEGIN
    INSERT INTO network_change (revision, kind, key)
        SELECT revision, 'host', OLD.host FROM network_revision WHERE id = 1
        ON CONFLICT DO NOTHING;
END;
