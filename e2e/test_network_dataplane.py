"""The networking story end to end: the real `openstack` CLI against a
`ferrostack serve` that runs its node agent, and namespaces acting as the
node's host namespace, the outside world and VMs.

The server's agent builds its bridges in the lab's "host" namespace
(`--agent-netns`) and scopes its router and DHCP namespaces
(`--agent-netns-scope`), so nothing here touches the machine's own network
and several runs can share a machine. The tests run in order and share
one cloud: each step builds on the previous ones, as an operator's
session would. Root only (CI runs as root): not root, they fail unless a
developer sets FERROSTACK_SKIP_ROOT=1 (see rootgate.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ServerFactory
from harness import Server, check, field
from netlab import Lab, wait_for
from rootgate import require_root


@pytest.fixture(scope="module", autouse=True)
def _needs_root() -> None:
    # Not root, these fail rather than pass unrun; see rootgate.py for
    # the developer's opt-out and why CI does not honour it.
    require_root("the data plane tests")


HOST = "e2e-dp-node"
EXT_IF = "ext0"
OUTSIDE = "203.0.113.1"


class Cloud:
    """The shared state of the module: server, lab, and what was built."""

    def __init__(self, srv: Server, lab: Lab, factory: ServerFactory):
        self.srv = srv
        self.lab = lab
        self.factory = factory
        self.clouds: Path | None = None
        self.ids: dict[str, str] = {}
        self.ports: dict[str, dict] = {}
        self.vms: dict[str, str] = {}

    # -- API helpers (admin) --------------------------------------------------

    def net(self, path: str) -> str:
        return f"{self.srv.url}/network/v2.0/{path.lstrip('/')}"

    def get(self, path: str) -> dict:
        return check(self.srv.api.get(self.net(path)), 200).json()

    def port(self, port_id: str) -> dict:
        return self.get(f"ports/{port_id}")["port"]

    def bind(self, port_id: str, vm: str) -> dict:
        r = self.srv.api.request(
            "PUT", self.net(f"ports/{port_id}"),
            json={"port": {"binding:host_id": HOST, "device_id": f"vm-{vm}", "device_owner": "compute:nova"}},
        )
        return check(r, 200).json()["port"]

    def wait_active(self, port_id: str, timeout: float = 30.0) -> dict:
        return wait_for(f"port {port_id} ACTIVE", lambda: (p := self.port(port_id))["status"] == "ACTIVE" and p,
                        timeout=timeout)

    def as_(self, who: str, *args, **kw):
        return self.srv.openstack(*args, cloud=who, config=self.clouds, **kw)

    def plug_vm(self, name: str, port: dict) -> str:
        ns = self.lab.vm(name, "tap" + port["id"][:11], port["mac_address"])
        self.vms[name] = ns
        return ns


@pytest.fixture(scope="module")
def cloud(request) -> Iterator[Cloud]:
    root = Path(tempfile.mkdtemp(prefix="ferrostack-e2e-dp-"))
    lab = Lab(root / "lab")
    factory = ServerFactory(root)
    failed = False
    try:
        lab.outside(EXT_IF, f"{OUTSIDE}/24")
        srv = factory(
            "--agent", "on",
            "--agent-netns", lab.host,
            "--agent-netns-scope", lab.scope,
            "--physical-network", f"public:{EXT_IF}",
            "--host", HOST,
        )
        c = Cloud(srv, lab, factory)
        yield c
        failed = request.session.testsfailed > 0
    finally:
        factory.teardown(dump=failed)
        lab.close()


def test_admin_makes_the_flat_external_network_on_a_host_interface(cloud):
    os_ = cloud.srv.openstack
    net = os_("network", "create", "--external", "--provider-network-type", "flat",
              "--provider-physical-network", "public", "public")
    os_("subnet", "create", "--network", "public", "--subnet-range", "203.0.113.0/24",
        "--gateway", OUTSIDE, "--allocation-pool", "start=203.0.113.10,end=203.0.113.99",
        "--no-dhcp", "public-subnet")
    cloud.ids["public"] = field(net, "id")
    for project, user in (("demo", "alice"), ("other", "bob")):
        os_("project", "create", project)
        os_("user", "create", "--project", project, "--password", "s3cret", user)
        os_("role", "add", "--user", user, "--project", project, "member")
    cloud.clouds = cloud.srv.write_clouds({
        "alice": cloud.srv.password_cloud("alice", "s3cret", "demo"),
        "bob": cloud.srv.password_cloud("bob", "s3cret", "other"),
    })
    # The in-process agent reports this node's functions, alive.
    agents = [a for a in cloud.get("agents")["agents"] if a["host"] == HOST]
    kinds = {a["agent_type"] for a in agents}
    assert kinds == {"Linux bridge agent", "L3 agent", "DHCP agent", "Metadata agent"}, agents
    assert all(a["alive"] for a in agents), agents
    l2 = next(a for a in agents if a["agent_type"] == "Linux bridge agent")
    assert l2["configurations"]["interface_mappings"] == {"public": EXT_IF}, l2


def test_the_member_story_wires_a_vm_that_gets_its_address_by_dhcp(cloud):
    alice = lambda *a, **kw: cloud.as_("alice", *a, **kw)  # noqa: E731
    net = alice("network", "create", "net1")
    sub = alice("subnet", "create", "--network", "net1", "--subnet-range", "10.0.0.0/24", "sub1")
    router = alice("router", "create", "r1")
    alice("router", "set", "--external-gateway", "public", "r1")
    alice("router", "add", "subnet", "r1", "sub1")
    alice("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22", "default")
    p1 = alice("port", "create", "--network", "net1", "p1")
    p2 = alice("port", "create", "--network", "net1", "p2")
    fip = alice("floating", "ip", "create", "public")
    fip_addr = field(fip, "floating_ip_address")
    alice("floating", "ip", "set", "--port", "p1", fip_addr)
    cloud.ids.update(net1=field(net, "id"), sub1=field(sub, "id"), r1=field(router, "id"),
                     fip=field(fip, "id"), fip_addr=fip_addr)
    assert field(cloud.as_("alice", "port", "show", "p1"), "status") == "DOWN"

    # Compute's part, played by the test: bind the ports to this host and
    # create their devices.
    for name, p in (("vm1", p1), ("vm2", p2)):
        port = cloud.bind(field(p, "id"), name)
        cloud.ports[name] = port
        cloud.plug_vm(name, port)
    for name in ("vm1", "vm2"):
        port = cloud.wait_active(cloud.ports[name]["id"])
        assert port["binding:vif_type"] in ("tap", "bridge"), port

    for name in ("vm1", "vm2"):
        lease = cloud.lab.dhcp(cloud.vms[name], name)
        assert lease is not None, f"{name} got no DHCP lease\n{cloud.srv.log_tail(3000)}"
        want = cloud.ports[name]["fixed_ips"][0]["ip_address"]
        assert lease["ip"] == want, lease
        assert lease["mask"] == "24", lease
        assert lease["mtu"] == "1450", lease  # VXLAN: 1500 - 50
        assert "169.254.169.254/32 10.0.0.1" in lease["staticroutes"], lease
        assert "0.0.0.0/0 10.0.0.1" in lease["staticroutes"], lease
        cloud.ids[f"{name}_ip"] = want


def test_vms_on_the_network_ping_each_other(cloud):
    assert cloud.lab.reaches(cloud.vms["vm1"], cloud.ids["vm2_ip"])
    assert cloud.lab.reaches(cloud.vms["vm2"], cloud.ids["vm1_ip"])
    assert cloud.lab.reaches(cloud.vms["vm2"], "10.0.0.1"), "the router's leg"


def test_the_outside_sees_snat_from_the_router_gateway_address(cloud):
    lab = cloud.lab
    lab.serve(lab.out, "outside", 8080)
    router = cloud.get(f"routers/{cloud.ids['r1']}")["router"]
    gw = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
    cloud.ids["r1_gw"] = gw
    assert router["external_gateway_info"]["enable_snat"] is True
    seen = wait_for("vm2 reaching the outside", lambda: lab.get(cloud.vms["vm2"], OUTSIDE, 8080))
    assert seen == f"outside {gw}", seen
    # vm1 has a floating IP: its traffic leaves as that address.
    seen = wait_for("vm1 reaching the outside", lambda: lab.get(cloud.vms["vm1"], OUTSIDE, 8080))
    assert seen == f"outside {cloud.ids['fip_addr']}", seen


def test_the_floating_ip_reaches_the_vm_only_on_allowed_ports(cloud):
    lab = cloud.lab
    out = lab.out
    lab.serve(cloud.vms["vm1"], "vm1", 22, 23)
    fip = cloud.ids["fip_addr"]
    seen = wait_for("the floating IP from outside", lambda: lab.get(out, fip, 22))
    assert seen == f"vm1 {OUTSIDE}", seen  # DNAT only: the VM sees the real source
    assert lab.get(out, fip, 23) is None, "port 23 is not allowed by the default group"
    # The default group's remote-group rule lets group members in on any port.
    assert lab.get(cloud.vms["vm2"], cloud.ids["vm1_ip"], 23) == f"vm1 {cloud.ids['vm2_ip']}"


def test_metadata_answers_network_data_json(cloud):
    lab = cloud.lab
    got = lab.http(cloud.vms["vm1"], "http://169.254.169.254/openstack/latest/network_data.json")
    assert got is not None, cloud.srv.log_tail(3000)
    status, body = got
    assert status == 200, body
    data = json.loads(body)
    port = cloud.ports["vm1"]
    assert [link["ethernet_mac_address"] for link in data["links"]] == [port["mac_address"]], data
    # A DHCP subnet is announced as such (Nova's shape: no address in it).
    assert data["networks"] == [{"id": "network0", "type": "ipv4_dhcp", "link": data["links"][0]["id"],
                                 "network_id": cloud.ids["net1"]}], data
    got = lab.http(cloud.vms["vm1"], "http://169.254.169.254/openstack/latest/meta_data.json")
    assert got is not None and got[0] == 200, got
    # The caller is identified by network and source address, not by headers.
    got = lab.http(cloud.vms["vm2"], "http://169.254.169.254/openstack/latest/network_data.json")
    assert got and json.loads(got[1])["links"][0]["ethernet_mac_address"] == cloud.ports["vm2"]["mac_address"]


def test_a_rule_added_takes_effect_and_deleting_it_cuts_the_session(cloud):
    lab = cloud.lab
    out = lab.out
    fip = cloud.ids["fip_addr"]
    rule = cloud.as_("alice", "security", "group", "rule", "create", "--protocol", "tcp",
                     "--dst-port", "23", "default")
    wait_for("port 23 open after the rule", lambda: lab.get(out, fip, 23), timeout=15)
    hold = lab.hold(out, fip, 23, 30)
    assert hold.poll() is None, "the session should be up before the rule is deleted"
    cloud.as_("alice", "security", "group", "rule", "delete", field(rule, "id"))
    hold.wait(20)
    verdict = hold.stdout.read()
    assert hold.returncode == 1 and "cut after" in verdict, verdict
    assert lab.get(out, fip, 23) is None
    assert lab.get(out, fip, 22) is not None, "port 22 still open"


def test_disassociating_the_floating_ip_cuts_it_off(cloud):
    lab = cloud.lab
    out = lab.out
    fip = cloud.ids["fip_addr"]
    # Sessions through the floating IP, both ways, open before it goes.
    inbound = lab.hold(out, fip, 22, 30)
    outbound = lab.hold(cloud.vms["vm1"], OUTSIDE, 8080, 30)
    cloud.as_("alice", "floating", "ip", "unset", "--port", fip)
    wait_for("the floating IP closed", lambda: lab.get(out, fip, 22, timeout=1.0) is None, timeout=15)
    for name, hold in (("inbound", inbound), ("outbound", outbound)):
        hold.wait(20)
        verdict = hold.stdout.read()
        assert hold.returncode == 1 and "cut after" in verdict, f"{name} session survived: {verdict}"
    seen = wait_for("vm1 reaching the outside", lambda: lab.get(cloud.vms["vm1"], OUTSIDE, 8080))
    assert seen == f"outside {cloud.ids['r1_gw']}", "without its FIP, vm1 is SNATed to the gateway"
    cloud.as_("alice", "floating", "ip", "set", "--port", "p1", fip)
    wait_for("the floating IP back", lambda: lab.get(out, fip, 22), timeout=15)


def test_another_project_with_the_same_cidr_is_invisible(cloud):
    lab = cloud.lab
    bob = lambda *a, **kw: cloud.as_("bob", *a, **kw)  # noqa: E731
    bob("network", "create", "net1")
    bob("subnet", "create", "--network", "net1", "--subnet-range", "10.0.0.0/24", "sub1")
    router = bob("router", "create", "r1")
    bob("router", "set", "--external-gateway", "public", "r1")
    bob("router", "add", "subnet", "r1", "sub1")
    pb = bob("port", "create", "--network", "net1", "pb")
    cloud.ids["bob_r1"] = field(router, "id")
    port = cloud.bind(field(pb, "id"), "vm3")
    cloud.ports["vm3"] = port
    vm3 = cloud.plug_vm("vm3", port)
    cloud.wait_active(port["id"])
    lease = lab.dhcp(vm3, "vm3")
    assert lease and lease["ip"] == port["fixed_ips"][0]["ip_address"], lease
    assert lease["ip"] == cloud.ids["vm1_ip"], "same CIDR, same first address as alice's vm1"
    lab.serve(vm3, "vm3", 22)
    # Bob's VM reaches its own router and the outside, through its own gateway.
    assert lab.reaches(vm3, "10.0.0.1")
    bob_gw = cloud.get(f"routers/{cloud.ids['bob_r1']}")["router"]["external_gateway_info"][
        "external_fixed_ips"][0]["ip_address"]
    assert bob_gw != cloud.ids["r1_gw"]
    seen = wait_for("vm3 reaching the outside", lambda: lab.get(vm3, OUTSIDE, 8080))
    assert seen == f"outside {bob_gw}", seen
    # ...but nothing of alice's: not her vm2, and 10.0.0.3 is itself for bob
    # and alice's vm1 for alice.
    assert not lab.ping(vm3, cloud.ids["vm2_ip"], count=2)
    assert lab.get(vm3, cloud.ids["vm2_ip"], 22, timeout=1.0) is None
    assert lab.get(cloud.vms["vm2"], cloud.ids["vm1_ip"], 22) == f"vm1 {cloud.ids['vm2_ip']}"
    assert lab.get(vm3, lease["ip"], 22) == f"vm3 {lease['ip']}"


def _host_view(cloud: Cloud) -> dict:
    lab = cloud.lab
    links = lab.links()
    return {
        "bridges": sorted(x for x in links if x.startswith("fsb-")),
        "vxlan": sorted(x for x in links if x.startswith("fsx-")),
        "taps": sorted(x for x in links if x.startswith("tap")),
        "dhcp_legs": sorted(x for x in links if x.startswith("fsd-")),
        "namespaces": sorted(lab.agent_namespaces()),
        "tables": sorted(lab.nft_tables()),
    }


def test_killing_the_agent_mid_wiring_converges_and_traffic_keeps_flowing(cloud):
    lab = cloud.lab
    srv = cloud.srv
    before = _host_view(cloud)
    # A steady flow from vm2 to the outside through SNAT, across the kill.
    pinger = lab.spawn(cloud.vms["vm2"], "busybox", "ping", "-i", "0.2", "-w", "14", OUTSIDE)
    new = []
    for i in range(4):
        r = srv.api.request("POST", cloud.net("ports"), json={"port": {
            "network_id": cloud.ids["net1"], "project_id": cloud.ports["vm1"]["project_id"],
            "binding:host_id": HOST, "device_owner": "compute:nova", "device_id": f"vm-k{i}",
        }})
        port = check(r, 201).json()["port"]
        cloud.ports[f"k{i}"] = port
        cloud.plug_vm(f"k{i}", port)
        new.append(port)
    # Kill the whole process (agent included) while those are being wired.
    assert srv.proc is not None
    os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)
    srv.start()
    for port in new:
        cloud.wait_active(port["id"], timeout=40)
    lease = lab.dhcp(cloud.vms["k3"], "k3")
    assert lease and lease["ip"] == new[3]["fixed_ips"][0]["ip_address"], lease
    out, _ = pinger.communicate(timeout=30)
    m = re.search(r"(\d+) packets transmitted, (\d+) packets received", out)
    assert m, out
    sent, got = int(m.group(1)), int(m.group(2))
    assert sent >= 40 and got >= sent * 0.9, f"traffic stalled across the restart: {out}"
    # Converged: the new ports' taps are on net1's bridge, and nothing of the
    # old was duplicated or left behind.
    after = _host_view(cloud)
    bridge = "fsb-" + cloud.ids["net1"].replace("-", "")[:11]
    for port in new:
        assert lab.master_of("tap" + port["id"][:11]) == bridge
    assert after["bridges"] == before["bridges"]
    assert after["vxlan"] == before["vxlan"]
    assert after["namespaces"] == before["namespaces"]
    assert after["dhcp_legs"] == before["dhcp_legs"]
    assert after["tables"] == before["tables"]
    assert sorted(set(after["taps"]) - set(before["taps"])) == sorted("tap" + p["id"][:11] for p in new)
    # And the earlier VMs still work end to end.
    assert lab.get(lab.out, cloud.ids["fip_addr"], 22) is not None


def test_explain_port_describes_the_data_path(cloud):
    port = cloud.ports["vm1"]
    p = cloud.srv.run_bin("explain-port", port["id"], "--data-dir", str(cloud.srv.data_dir))
    text = p.stdout
    assert port["id"] in text, text
    assert "tap" + port["id"][:11] in text, text
    assert "fsb-" + cloud.ids["net1"].replace("-", "")[:11] in text, text
    assert f"fsr-{cloud.lab.scope}-{cloud.ids['r1']}" in text, text
    assert cloud.ids["fip_addr"] in text, text
    assert "ACTIVE" in text, text
    bad = cloud.srv.run_bin("explain-port", "not-a-port", "--data-dir", str(cloud.srv.data_dir),
                            check_rc=False)
    assert bad.returncode != 0 and "port id" in bad.stderr, bad


def test_deleting_everything_leaves_the_host_as_clean_as_before(cloud):
    api, lab = cloud.srv.api, cloud.lab
    for fip in cloud.get("floatingips")["floatingips"]:
        check(api.delete(cloud.net(f"floatingips/{fip['id']}")), 204)
    for router in cloud.get("routers")["routers"]:
        for port in cloud.get(f"ports?device_id={router['id']}&device_owner=network:router_interface")["ports"]:
            r = api.request("PUT", cloud.net(f"routers/{router['id']}/remove_router_interface"),
                            json={"port_id": port["id"]})
            check(r, 200)
        check(api.delete(cloud.net(f"routers/{router['id']}")), 204)
    for name, port in cloud.ports.items():
        check(api.delete(cloud.net(f"ports/{port['id']}")), 204)
    for net in cloud.get("networks")["networks"]:
        check(api.delete(cloud.net(f"networks/{net['id']}")), 204)
    # The VMs' devices are compute's (here: the test's) to remove, as QEMU
    # exiting removes a tap. (Deleting a VM namespace alone would not do: a
    # socket still closing inside keeps it, and its veth, alive.)
    for name, ns in list(cloud.vms.items()):
        lab.unplug("tap" + cloud.ports[name]["id"][:11])
        lab.remove_netns(ns)

    left: dict = {}

    def clean() -> bool:
        left.clear()
        left.update({k: v for k, v in _host_view(cloud).items() if v})
        return not left
    try:
        wait_for("the host back to its first state", clean, timeout=30)
    except AssertionError:
        owners = {"tap" + p["id"][:11]: name for name, p in cloud.ports.items()}
        named = {t: owners.get(t, "?") for t in left.get("taps", [])}
        raise AssertionError(f"left on the host: {left} (taps of {named})\n{cloud.srv.log_tail(3000)}") from None
    assert sorted(lab.links()) == sorted(["lo", EXT_IF])
    assert lab.master_of(EXT_IF) is None, "the uplink is detached from the gone bridge"
