"""Tiny network probes run inside namespace "VMs" by the data plane tests
(`ip netns exec NS python3 netprobe.py ...`). Standard library only.

  serve NAME PORT...         TCP servers: each connection gets
                             "NAME <peer address>\\n", then whatever it
                             sends is echoed until it closes.
  get HOST PORT [TIMEOUT]    connect, print the first line, exit 0;
                             exit 1 if no connection or no line in time.
  hold HOST PORT SECONDS     connect, then every 0.2 s send a line and read
                             the echo; print "cut after N" and exit 1 as
                             soon as one fails, else "held N" and exit 0.
  http URL [TIMEOUT]         GET; print the status line and the body.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import urllib.error
import urllib.request


def serve(name: str, ports: list[int]) -> None:
    def handle(conn: socket.socket, peer) -> None:
        with conn:
            conn.sendall(f"{name} {peer[0]}\n".encode())
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(data)

    def loop(port: int) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(64)
        while True:
            conn, peer = s.accept()
            threading.Thread(target=handle, args=(conn, peer), daemon=True).start()

    for p in ports:
        threading.Thread(target=loop, args=(p,), daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def get(host: str, port: int, timeout: float) -> int:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            line = s.makefile("rb").readline().decode().strip()
    except OSError as e:
        print(f"error {e}")
        return 1
    if not line:
        print("error no greeting")
        return 1
    print(line)
    return 0


def hold(host: str, port: int, seconds: float) -> int:
    try:
        s = socket.create_connection((host, port), timeout=2)
        s.settimeout(1.5)
        f = s.makefile("rb")
        f.readline()
    except OSError as e:
        print(f"error {e}")
        return 2
    print("connected", flush=True)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            s.sendall(b"ping\n")
            if f.readline() != b"ping\n":
                raise OSError("no echo")
        except OSError:
            print(f"cut after {n}", flush=True)
            return 1
        n += 1
        time.sleep(0.2)
    print(f"held {n}", flush=True)
    return 0


def http(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            print(r.status)
            print(r.read().decode())
            return 0
    except urllib.error.HTTPError as e:
        print(e.code)
        print(e.read().decode())
        return 0
    except OSError as e:
        print(f"error {e}")
        return 1


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "serve":
        serve(args[0], [int(p) for p in args[1:]])
        return 0
    if cmd == "get":
        return get(args[0], int(args[1]), float(args[2]) if len(args) > 2 else 2.0)
    if cmd == "hold":
        return hold(args[0], int(args[1]), float(args[2]))
    if cmd == "http":
        return http(args[0], float(args[1]) if len(args) > 1 else 5.0)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
