"""A network lab for the data plane tests: named namespaces acting as the
node's "host" namespace (where the agent builds its bridges), the outside
world on a flat external network, and VMs plugged into ports.

Everything is named from one unique prefix (`fse-XXXXXX-…`; the agent's
own namespaces carry the scope `tXXXXXX`), and `close()` removes all of it
whatever state the test left: processes, namespaces, the agent's leftover
router and DHCP namespaces.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

PROBE = str(Path(__file__).with_name("netprobe.py"))

UDHCPC_SCRIPT = r"""#!/bin/sh
# udhcpc hook: configure eth0 and record what was offered.
case "$1" in
  bound|renew)
    busybox ip addr flush dev "$interface"
    busybox ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && busybox ip link set dev "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do
        busybox ip route replace "$1" via "$2" dev "$interface"
        shift 2
      done
    elif [ -n "$router" ]; then
      busybox ip route replace default via "${router%% *}" dev "$interface"
    fi
    printf 'ip=%s\nmask=%s\nhostname=%s\nmtu=%s\nstaticroutes=%s\nrouter=%s\ndns=%s\n' \
      "$ip" "$mask" "$hostname" "$mtu" "$staticroutes" "$router" "$dns" > "$DHCP_RESULT"
    ;;
esac
exit 0
"""


def run(*argv: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` exited {p.returncode}: {p.stdout}{p.stderr}")
    return p


def netns_list() -> list[str]:
    out = run("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


class Lab:
    def __init__(self, root: Path):
        tag = secrets.token_hex(3)
        self.prefix = f"fse-{tag}"
        self.scope = f"t{tag}"
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.namespaces: list[str] = []
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.out = ""
        self.host = self.netns("h")
        self.script = self.dir / "udhcpc.sh"
        self.script.write_text(UDHCPC_SCRIPT)
        self.script.chmod(0o755)

    # -- namespaces ---------------------------------------------------------

    def netns(self, name: str) -> str:
        ns = f"{self.prefix}-{name}"
        run("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def ns(self, ns: str, *argv: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)

    def outside(self, iface: str, cidr: str) -> str:
        """The outside world: a namespace whose `eth0` (address `cidr`) is
        the peer of `iface` in the host namespace."""
        out = self.netns("out")
        self.out = out
        run("ip", "-n", self.host, "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", out)
        run("ip", "-n", self.host, "link", "set", iface, "up")
        run("ip", "-n", out, "addr", "add", cidr, "dev", "eth0")
        run("ip", "-n", out, "link", "set", "eth0", "up")
        return out

    def vm(self, name: str, device: str, mac: str, mtu: int = 1500) -> str:
        """A namespace acting as a VM on a port: a veth whose host end is
        the port's device (as the compute driver's tap would be) and whose
        other end is `eth0` with the port's MAC."""
        ns = self.netns(name)
        self.plug(ns, device, mac, mtu)
        return ns

    def plug(self, ns: str, device: str, mac: str, mtu: int = 1500) -> None:
        run("ip", "-n", self.host, "link", "add", device, "mtu", str(mtu), "type", "veth",
            "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", ns, "link", "set", "eth0", "address", mac, "mtu", str(mtu), "up")
        run("ip", "-n", self.host, "link", "set", device, "up")

    def unplug(self, device: str) -> None:
        """Deletes a VM's device (both ends of its veth)."""
        run("ip", "-n", self.host, "link", "del", device, check=False)

    def remove_netns(self, ns: str) -> None:
        """Deletes a namespace after killing what runs in it (a process or
        socket inside keeps the namespace, and its devices, alive)."""
        self._kill([p for n, p in self.procs if n == ns])
        self.procs = [(n, p) for n, p in self.procs if n != ns]
        run("ip", "netns", "delete", ns, check=False)
        if ns in self.namespaces:
            self.namespaces.remove(ns)

    # -- processes inside namespaces -----------------------------------------

    def spawn(self, ns: str, *argv: str) -> subprocess.Popen:
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )
        self.procs.append((ns, p))
        return p

    def serve(self, ns: str, name: str, *ports: int) -> subprocess.Popen:
        p = self.spawn(ns, sys.executable, "-u", PROBE, "serve", name, *map(str, ports))
        line = p.stdout.readline().strip() if p.stdout else ""
        assert line == "ready", f"probe server in {ns} did not start: {line!r}"
        return p

    def get(self, ns: str, host: str, port: int, timeout: float = 2.0) -> str | None:
        """The greeting of HOST:PORT from `ns` ("NAME <peer>"), or None."""
        p = self.ns(ns, sys.executable, PROBE, "get", host, str(port), str(timeout),
                    check=False, timeout=timeout + 10)
        return p.stdout.strip() if p.returncode == 0 else None

    def hold(self, ns: str, host: str, port: int, seconds: float) -> subprocess.Popen:
        """A session from `ns` to HOST:PORT kept busy for `seconds` (see
        netprobe's `hold`), started and seen working before this returns;
        its exit code is 1 ("cut after N") if it breaks."""
        p = self.spawn(ns, sys.executable, "-u", PROBE, "hold", host, str(port), str(seconds))
        line = p.stdout.readline().strip() if p.stdout else ""
        assert line == "connected", f"no session from {ns} to {host}:{port}: {line!r}"
        time.sleep(1.0)
        assert p.poll() is None, f"the session from {ns} to {host}:{port} broke at once"
        return p

    def http(self, ns: str, url: str) -> tuple[int, str] | None:
        p = self.ns(ns, sys.executable, PROBE, "http", url, "5", check=False, timeout=20)
        if p.returncode != 0:
            return None
        status, _, body = p.stdout.partition("\n")
        return int(status), body

    def ping(self, ns: str, dst: str, count: int = 1) -> bool:
        p = self.ns(ns, "busybox", "ping", "-c", str(count), "-W", "1", "-w", str(count + 1), dst,
                    check=False, timeout=count + 10)
        return p.returncode == 0

    def reaches(self, ns: str, dst: str) -> bool:
        """Ping with a few tries (the first packet may wait for ARP)."""
        return any(self.ping(ns, dst) for _ in range(3))

    def dhcp(self, ns: str, tag: str) -> dict[str, str] | None:
        """`busybox udhcpc` on eth0 in `ns`; what the server offered, or None."""
        result = self.dir / f"dhcp-{tag}.txt"
        with contextlib.suppress(FileNotFoundError):
            result.unlink()
        env = dict(os.environ, DHCP_RESULT=str(result))
        p = subprocess.run(
            ["ip", "netns", "exec", ns, "busybox", "udhcpc", "-f", "-q", "-n", "-i", "eth0",
             "-t", "5", "-T", "1", "-O", "staticroutes", "-O", "mtu", "-s", str(self.script)],
            capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL,
        )
        if p.returncode != 0 or not result.exists():
            return None
        return dict(line.split("=", 1) for line in result.read_text().splitlines() if "=" in line)

    # -- what the host has ---------------------------------------------------

    def links(self, ns: str | None = None) -> list[str]:
        out = run("ip", "-n", ns or self.host, "-o", "link", "show").stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def master_of(self, device: str) -> str | None:
        out = run("ip", "-n", self.host, "-o", "link", "show", "dev", device, check=False).stdout
        parts = out.split()
        return parts[parts.index("master") + 1] if "master" in parts else None

    def nft_tables(self, ns: str | None = None) -> list[str]:
        out = run("ip", "netns", "exec", ns or self.host, "nft", "list", "tables").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def agent_namespaces(self) -> list[str]:
        """The agent's router and DHCP namespaces of this lab's scope."""
        return [n for n in netns_list() if n.startswith((f"fsr-{self.scope}-", f"fsd-{self.scope}-"))]

    # -- cleanup -------------------------------------------------------------

    @staticmethod
    def _kill(procs: list[subprocess.Popen]) -> None:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)

    def close(self) -> None:
        self._kill([p for _, p in self.procs])
        self.procs.clear()
        for ns in self.agent_namespaces() + list(reversed(self.namespaces)):
            run("ip", "netns", "delete", ns, check=False)
        self.namespaces.clear()


def wait_for(what: str, fn, timeout: float = 20.0, interval: float = 0.3):
    """Polls fn() until it returns something truthy; fails with `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
