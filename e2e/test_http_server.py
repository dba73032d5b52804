"""The HTTP server layer with the real `openstack` CLI: the identity
endpoint with the trailing slash clients often configure, and a slow client
whose connection slot is freed for others."""

from __future__ import annotations

import socket

from harness import Server


def test_the_cli_authenticates_with_or_without_a_trailing_slash(server: Server):
    for auth_url in [server.identity_url, server.identity_url + "/"]:
        token = server.openstack("--os-auth-url", auth_url, "token", "issue")
        assert token["id"], auth_url
        images = server.openstack("--os-auth-url", auth_url, "image", "list")
        assert isinstance(images, list), auth_url


def test_a_slowloris_client_is_dropped_and_its_slot_serves_the_cli(tmp_path):
    # One connection slot, held by a client that never finishes its head:
    # the CLI is only served once the server has dropped that client, so
    # its answer proves the header timeout freed the slot. (A short
    # keep-alive, in case the CLI opens a second connection while its first
    # idles in its pool.)
    srv = Server(
        tmp_path / "data",
        "--http-header-timeout",
        "2",
        "--http-max-connections",
        "1",
        "--http-keepalive-timeout",
        "5",
    ).start()
    try:
        slow = socket.create_connection(("127.0.0.1", srv.port))
        slow.sendall(b"GET /identity HTTP/1.1\r\nX-Slow: ")
        assert srv.openstack("network", "list") == []
        # By now the server has closed the slow client's connection.
        slow.settimeout(10)
        try:
            closed = slow.recv(1) == b""
        except OSError:
            closed = True
        assert closed, "the slow client is still connected"
    finally:
        srv.stop()
