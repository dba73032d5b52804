"""The HTTP server layer with the real `openstack` CLI: the identity
endpoint with the trailing slash clients often configure, and a slow client
that does not hold the server up for others."""

from __future__ import annotations

import socket
import time

from harness import Server


def test_the_cli_authenticates_with_or_without_a_trailing_slash(server: Server):
    for auth_url in [server.identity_url, server.identity_url + "/"]:
        token = server.openstack("--os-auth-url", auth_url, "token", "issue")
        assert token["id"], auth_url
        images = server.openstack("--os-auth-url", auth_url, "image", "list")
        assert isinstance(images, list), auth_url


def test_a_slowloris_client_is_dropped_while_the_cli_works(tmp_path):
    srv = Server(tmp_path / "data", "--http-header-timeout", "2").start()
    try:
        slow = socket.create_connection(("127.0.0.1", srv.port))
        slow.sendall(b"GET /identity HTTP/1.1\r\nX-Slow: ")
        t0 = time.monotonic()
        # The CLI is served meanwhile.
        assert srv.openstack("network", "list") == []
        closed = False
        slow.settimeout(0.3)
        while time.monotonic() - t0 < 10 and not closed:
            try:
                slow.sendall(b"a")
                closed = slow.recv(1) == b""
            except socket.timeout:
                pass
            except OSError:
                closed = True
        assert closed, "the slow client is still connected after 10 s"
        assert time.monotonic() - t0 >= 1.5
    finally:
        srv.stop()
