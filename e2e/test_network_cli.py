"""Networking (Neutron v2.0) through the real, unmodified `openstack` CLI.

All tests of this module share one server, started with a physical network
(`--physical-network physnet1:fs-ext0`) so the admin can make the flat
external network `public`. The issue's story runs as alice, a member of
project demo; other tests use names of their own. This server runs without its node
agent (`--agent off`, the harness's default), so ports stay DOWN; the data
plane is tested in test_network_dataplane.py.
"""

from __future__ import annotations

import ipaddress
import re
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ServerFactory
from harness import Server, check, column, field

HOST = "e2e-node"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def assert_status_in_output(result, status: int) -> None:
    assert re.search(rf"\b{status}\b", result.output), f"expected HTTP {status}:\n{result!r}"


@pytest.fixture(scope="module")
def module_server(request) -> Iterator[Server]:
    """This module's server: the shared fixture's, with a physical network
    and a fixed host name."""
    root = Path(tempfile.mkdtemp(prefix="ferrostack-e2e-net-"))
    f = ServerFactory(root)
    s = f("--physical-network", "physnet1:fs-ext0", "--host", HOST)
    yield s
    f.teardown(dump=False)


@pytest.fixture(scope="module")
def srv(module_server) -> Server:
    return module_server


@pytest.fixture(scope="module")
def os_(srv):
    return srv.openstack


@pytest.fixture(scope="module")
def story(srv):
    """The admin's external network, then project demo with member alice
    (and project other with member bob)."""
    os_ = srv.openstack
    net = os_(
        "network", "create", "--external",
        "--provider-network-type", "flat", "--provider-physical-network", "physnet1",
        "public",
    )
    sub = os_(
        "subnet", "create", "--network", "public", "--subnet-range", "203.0.113.0/24",
        "--allocation-pool", "start=203.0.113.10,end=203.0.113.100",
        "--gateway", "203.0.113.1", "--no-dhcp", "public-subnet",
    )
    for project, user in (("demo", "alice"), ("other", "bob")):
        os_("project", "create", project)
        os_("user", "create", "--project", project, "--password", "s3cret", user)
        os_("role", "add", "--user", user, "--project", project, "member")
    clouds = srv.write_clouds({
        "alice": srv.password_cloud("alice", "s3cret", "demo"),
        "bob": srv.password_cloud("bob", "s3cret", "other"),
    })
    return {"public": net, "public_subnet": sub, "clouds": clouds}


def as_(srv, story, who, *args, **kw):
    return srv.openstack(*args, cloud=who, config=story["clouds"], **kw)


def test_admin_made_the_flat_external_network(os_, story):
    net = story["public"]
    assert UUID.match(field(net, "id")), net
    assert field(net, "router:external") in (True, "External")
    assert field(net, "provider:network_type") == "flat"
    assert field(net, "provider:physical_network") == "physnet1"
    assert field(net, "status") == "ACTIVE"
    sub = story["public_subnet"]
    assert field(sub, "cidr") == "203.0.113.0/24"
    assert field(sub, "enable_dhcp") is False
    assert field(sub, "gateway_ip") == "203.0.113.1"
    pools = field(sub, "allocation_pools")
    assert "203.0.113.10" in str(pools) and "203.0.113.100" in str(pools), pools
    shown = os_("network", "show", "public")
    assert field(shown, "id") == field(net, "id")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", field(shown, "created_at")), shown


def test_the_story_as_a_member(srv, story):
    alice = lambda *a, **kw: as_(srv, story, "alice", *a, **kw)  # noqa: E731
    net = alice("network", "create", "net1")
    assert field(net, "name") == "net1"
    assert field(net, "status") == "ACTIVE"
    assert UUID.match(field(net, "id"))
    assert field(net, "project_id") == srv.api.project_id("demo")

    sub = alice("subnet", "create", "--network", "net1", "--subnet-range", "10.0.0.0/24", "sub1")
    assert field(sub, "cidr") == "10.0.0.0/24"
    assert field(sub, "gateway_ip") == "10.0.0.1"
    assert field(sub, "enable_dhcp") is True
    assert field(sub, "network_id") == field(net, "id")

    router = alice("router", "create", "r1")
    assert field(router, "name") == "r1"
    assert field(router, "status") == "ACTIVE"

    alice("router", "set", "--external-gateway", "public", "r1")
    alice("router", "add", "subnet", "r1", "sub1")
    shown = alice("router", "show", "r1")
    gw = field(shown, "external_gateway_info")
    assert field(story["public"], "id") in str(gw), gw
    assert "203.0.113." in str(gw), gw
    assert "10.0.0.1" in str(field(shown, "interfaces_info")), shown

    rule = alice("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22", "default")
    assert field(rule, "protocol") == "tcp"
    assert field(rule, "port_range_min") == 22
    assert field(rule, "port_range_max") == 22
    assert field(rule, "direction") == "ingress"
    assert field(rule, "remote_ip_prefix") == "0.0.0.0/0"

    port = alice("port", "create", "--network", "net1", "p1")
    assert field(port, "name") == "p1"
    assert field(port, "status") == "DOWN", "no agent wires it in this suite"
    assert field(port, "mac_address").startswith("fa:16:3e:"), port
    fixed = field(port, "fixed_ips")
    addr = re.search(r"10\.0\.0\.\d+", str(fixed)).group(0)
    assert addr not in ("10.0.0.0", "10.0.0.1", "10.0.0.255"), fixed
    assert len(field(port, "security_group_ids")) == 1, port

    fip = alice("floating", "ip", "create", "public")
    address = field(fip, "floating_ip_address")
    assert ipaddress.ip_address(address) in ipaddress.ip_network("203.0.113.0/24")
    assert 10 <= int(address.rsplit(".", 1)[1]) <= 100, address
    assert field(fip, "port_id") is None

    alice("floating", "ip", "set", "--port", "p1", address)
    fip = alice("floating", "ip", "show", address)
    assert field(fip, "port_id") == field(port, "id")
    assert field(fip, "fixed_ip_address") == addr
    assert field(fip, "router_id") == field(router, "id")
    assert field(fip, "status") == "ACTIVE"

    # Lists and shows of everything made.
    assert {"net1", "public"} <= set(column(alice("network", "list"), "name"))
    assert "sub1" in column(alice("subnet", "list"), "name")
    assert "r1" in column(alice("router", "list"), "name")
    assert "p1" in column(alice("port", "list"), "name")
    assert address in column(alice("floating", "ip", "list"), "floating_ip_address")
    groups = alice("security", "group", "list")
    assert column(groups, "name") == ["default"], groups
    rules = alice("security", "group", "rule", "list", "default")
    assert len(rules) == 5, rules
    assert field(alice("network", "show", "net1"), "subnets") in ([field(sub, "id")], field(sub, "id"))
    assert field(alice("subnet", "show", "sub1"), "cidr") == "10.0.0.0/24"
    assert field(alice("port", "show", "p1"), "id") == field(port, "id")
    assert field(alice("security", "group", "rule", "show", field(rule, "id")), "port_range_min") == 22
    member_view = alice("network", "show", "net1")
    assert not member_view.get("provider:network_type"), "provider attributes are the admin's"
    router_ports = alice("port", "list", "--router", "r1")
    assert len(router_ports) == 1, router_ports

    # The admin sees the data plane's view of it.
    admin_port = srv.openstack("port", "show", field(port, "id"))
    assert field(admin_port, "binding_vnic_type") == "normal"
    assert field(srv.openstack("network", "show", "net1"), "provider:network_type") == "vxlan"

    # Unwind in reverse.
    alice("floating", "ip", "unset", "--port", address)
    assert field(alice("floating", "ip", "show", address), "port_id") is None
    alice("floating", "ip", "delete", address)
    assert address not in column(alice("floating", "ip", "list"), "floating_ip_address")
    alice("port", "delete", "p1")
    alice("port", "show", "p1", expect_fail=True)
    alice("router", "remove", "subnet", "r1", "sub1")
    alice("router", "unset", "--external-gateway", "r1")
    assert not field(alice("router", "show", "r1"), "external_gateway_info")
    alice("router", "delete", "r1")
    alice("security", "group", "rule", "delete", field(rule, "id"), json_output=False)
    assert len(alice("security", "group", "rule", "list", "default")) == 4
    alice("subnet", "delete", "sub1")
    alice("network", "delete", "net1")
    assert "net1" not in column(alice("network", "list"), "name")


def test_members_may_not_make_external_or_provider_networks(srv, story):
    r = as_(srv, story, "alice", "network", "create", "--external", "ext-by-member", expect_fail=True)
    assert_status_in_output(r, 403)
    r = as_(
        srv, story, "alice", "network", "create",
        "--provider-network-type", "flat", "--provider-physical-network", "physnet1", "flat-by-member",
        expect_fail=True,
    )
    assert_status_in_output(r, 403)
    r = as_(srv, story, "alice", "port", "create", "--network", "public", "on-public", expect_fail=True)
    assert_status_in_output(r, 403)
    r = as_(
        srv, story, "alice", "port", "create", "--network", "public",
        "--device-owner", "network:router_gateway", "sneaky", expect_fail=True,
    )
    assert_status_in_output(r, 403)
    assert "ext-by-member" not in column(srv.openstack("network", "list"), "name")


def test_projects_do_not_see_each_others_networks(srv, story, uniq):
    mine = as_(srv, story, "alice", "network", "create", f"private-{uniq}")
    r = as_(srv, story, "bob", "network", "show", field(mine, "id"), expect_fail=True)
    assert "No Network found" in r.output or "404" in r.output or "could not be found" in r.output, r
    assert f"private-{uniq}" not in column(as_(srv, story, "bob", "network", "list"), "name")
    assert "public" in column(as_(srv, story, "bob", "network", "list"), "name")
    r = as_(srv, story, "bob", "network", "delete", field(mine, "id"), expect_fail=True)
    assert field(srv.openstack("network", "show", field(mine, "id")), "name") == f"private-{uniq}"
    as_(srv, story, "alice", "network", "delete", field(mine, "id"))


def test_network_subnet_port_and_group_updates(srv, story, uniq):
    alice = lambda *a, **kw: as_(srv, story, "alice", *a, **kw)  # noqa: E731
    alice("network", "create", "--description", "d1", f"n-{uniq}")
    alice("network", "set", "--name", f"n2-{uniq}", "--tag", "blue", f"n-{uniq}")
    n = alice("network", "show", f"n2-{uniq}")
    assert field(n, "tags") in (["blue"], "blue"), n
    assert field(n, "revision_number") >= 2
    alice(
        "subnet", "create", "--network", f"n2-{uniq}", "--subnet-range", "fd00:10::/64",
        "--ip-version", "6", "--ipv6-address-mode", "slaac", "--ipv6-ra-mode", "slaac", f"v6-{uniq}",
    )
    alice(
        "subnet", "create", "--network", f"n2-{uniq}", "--subnet-range", "10.9.0.0/24",
        "--dns-nameserver", "10.9.0.53", "--allocation-pool", "start=10.9.0.100,end=10.9.0.150",
        f"v4-{uniq}",
    )
    alice("subnet", "set", "--dns-nameserver", "10.9.0.54", "--name", f"v4b-{uniq}", f"v4-{uniq}")
    s = alice("subnet", "show", f"v4b-{uniq}")
    assert "10.9.0.54" in str(field(s, "dns_nameservers")), s
    sg = alice("security", "group", "create", "--description", "web tier", f"web-{uniq}")
    alice("security", "group", "rule", "create", "--protocol", "udp", "--dst-port", "1000:2000",
          "--remote-group", f"web-{uniq}", f"web-{uniq}")
    alice("security", "group", "rule", "create", "--protocol", "icmp", "--ethertype", "IPv6", f"web-{uniq}")
    p = alice(
        "port", "create", "--network", f"n2-{uniq}", "--security-group", f"web-{uniq}",
        "--allowed-address", "ip-address=10.9.0.200", "--fixed-ip", f"subnet=v4b-{uniq},ip-address=10.9.0.120",
        f"p-{uniq}",
    )
    fixed = str(field(p, "fixed_ips"))
    assert "10.9.0.120" in fixed and "fd00:10::" in fixed, fixed
    assert field(p, "security_group_ids") == [field(sg, "id")]
    alice("port", "set", "--name", f"p2-{uniq}", "--no-security-group", "--disable-port-security",
          "--no-allowed-address", f"p-{uniq}")
    p = alice("port", "show", f"p2-{uniq}")
    assert field(p, "port_security_enabled") is False
    r = alice("security", "group", "create", "default", expect_fail=True)
    assert_status_in_output(r, 409)
    alice("port", "delete", f"p2-{uniq}")
    alice("security", "group", "delete", f"web-{uniq}")
    alice("subnet", "delete", f"v4b-{uniq}")
    alice("subnet", "delete", f"v6-{uniq}")
    alice("network", "delete", f"n2-{uniq}")


def test_admin_views_agents_extensions_zones_quotas(srv, os_, story):
    agents = os_("network", "agent", "list")
    here = [a for a in agents if field(a, "host") == HOST]
    assert {field(a, "agent_type") for a in here} == {
        "Linux bridge agent", "L3 agent", "DHCP agent", "Metadata agent",
    }, agents
    aliases = set(column(os_("extension", "list", "--network"), "alias"))
    assert {"router", "security-group", "provider", "external-net", "quotas", "binding"} <= aliases
    zones = os_("availability", "zone", "list", "--network")
    assert "nova" in column(zones, "zone_name"), zones
    avail = os_("ip", "availability", "list")
    public = [a for a in avail if field(a, "network_name") == "public"]
    assert public and field(public[0], "total_ips") == 91, avail
    demo = srv.api.project_id("demo")
    os_("quota", "set", "--networks", "7", demo)
    def limit(rows, resource):
        return {field(r, "resource"): field(r, "limit") for r in rows}[resource]

    assert limit(os_("quota", "show", demo, "--network"), "networks") == 7
    assert limit(as_(srv, story, "alice", "quota", "show", "--network"), "networks") == 7


def test_extra_dhcp_options_and_bad_names_are_refused(srv, story, uniq):
    r = as_(srv, story, "alice", "network", "create", f"bad\nname-{uniq}", expect_fail=True)
    assert_status_in_output(r, 400)
    net = as_(srv, story, "alice", "network", "create", f"n-{uniq}")
    # DHCP options are not implemented: the CLI sees the extension missing,
    # and the API refuses the attribute.
    r = as_(
        srv, story, "alice", "port", "create", "--network", f"n-{uniq}",
        "--extra-dhcp-option", "name=domain-name,value=evil", f"p-{uniq}", expect_fail=True,
    )
    assert "extra_dhcp_opt" in r.output, r
    token = srv.api.password_token("alice", "s3cret", project="demo")[0]
    raw = srv.api.session.post(
        srv.url + "/network/v2.0/ports",
        json={"port": {"network_id": field(net, "id"),
                       "extra_dhcp_opts": [{"opt_name": "domain-name", "opt_value": "a\nb"}]}},
        headers={"X-Auth-Token": token},
    )
    check(raw, 400)
    raw = srv.api.session.post(
        srv.url + "/network/v2.0/ports",
        json={"port": {"network_id": field(net, "id"), "dns_name": "host\nname"}},
        headers={"X-Auth-Token": token},
    )
    check(raw, 400)
    as_(srv, story, "alice", "network", "delete", field(net, "id"))


def test_raw_api_errors_have_neutrons_shape(srv, story):
    base = srv.url + "/network/v2.0"
    r = srv.api.session.get(base + "/networks/" + str(uuid.uuid4()), headers={"X-Auth-Token": srv.api.admin_token})
    check(r, 404)
    body = r.json()["NeutronError"]
    assert body["type"] == "NetworkNotFound" and body["detail"] == "", body
    r = srv.api.session.post(
        base + "/networks", json={"network": {"bogus": 1}}, headers={"X-Auth-Token": srv.api.admin_token}
    )
    check(r, 400)
    assert "Unrecognized attribute" in r.json()["NeutronError"]["message"]


def test_what_clients_hit_agents_providers_gateways_and_floating_ips(srv, os_, story, uniq):
    """Issue 10, with the real CLI: a member lists agents (none, not 403)
    and service providers; the extensions clients probe are listed; a router
    gateway on an external network without a subnet is accepted; floating
    IPs show `port_details`; an external network is deleted with its
    unassociated floating IPs."""
    alice = lambda *a, **kw: as_(srv, story, "alice", *a, **kw)  # noqa: E731
    assert alice("network", "agent", "list") == []
    providers = alice("network", "service", "provider", "list")
    assert [(field(p, "service_type"), field(p, "name")) for p in providers] == [
        ("L3_ROUTER_NAT", "single_node")
    ], providers
    aliases = set(column(alice("extension", "list", "--network"), "alias"))
    assert {"tag", "service-type", "fip-port-details", "subnet-external-network"} <= aliases

    bare = os_("network", "create", "--external", f"bare-{uniq}")
    alice("router", "create", f"r-{uniq}")
    alice("router", "set", "--external-gateway", f"bare-{uniq}", f"r-{uniq}")
    gw = field(alice("router", "show", f"r-{uniq}"), "external_gateway_info")
    assert field(bare, "id") in str(gw) and "external_fixed_ips" in str(gw), gw
    assert gw["external_fixed_ips"] == [], gw
    alice("router", "delete", f"r-{uniq}")
    os_("network", "delete", f"bare-{uniq}")

    os_("network", "create", "--external", f"ext-{uniq}")
    os_(
        "subnet", "create", "--network", f"ext-{uniq}", "--subnet-range", "198.51.100.0/24",
        "--no-dhcp", f"ext-sub-{uniq}",
    )
    fip = alice("floating", "ip", "create", f"ext-{uniq}")
    shown = alice("floating", "ip", "show", field(fip, "id"))
    assert field(shown, "port_details") in (None, {}), shown
    # The CLI prints a missing attribute the same way: ask the API too.
    token = srv.api.password_token("alice", "s3cret", project="demo")[0]
    raw = srv.api.session.get(
        srv.url + "/network/v2.0/floatingips/" + field(fip, "id"),
        headers={"X-Auth-Token": token},
    )
    check(raw, 200)
    assert "port_details" in raw.json()["floatingip"], raw.json()
    os_("network", "delete", f"ext-{uniq}")
    r = alice("floating", "ip", "show", field(fip, "id"), expect_fail=True)
    assert "No FloatingIP found" in r.output, r


def test_project_cleanup_lists_a_members_network_resources(srv, story, uniq):
    """The SDK's project clean-up asks `/service-providers` before it
    walks the network service; without it the clean-up aborts."""
    alice = lambda *a, **kw: as_(srv, story, "alice", *a, **kw)  # noqa: E731
    alice("network", "create", f"cl-{uniq}")
    r = alice("project", "cleanup", "--dry-run", "--auth-project", json_output=False)
    assert f"cl-{uniq}" in r.output, r
    alice("network", "delete", f"cl-{uniq}")
