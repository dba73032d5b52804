"""pytest fixtures for the Ferrostack end-to-end suite (see harness.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from harness import Api, Server, ferrostack_bin, free_port, openstack_bin


# --------------------------------------------------------------------------
# pytest plumbing
# --------------------------------------------------------------------------


def pytest_collection_finish(session):
    """Stop at once, with one clear message, when the server binary or the
    CLI is missing (rather than failing every test with it)."""
    if session.config.option.collectonly or not session.items:
        return
    try:
        ferrostack_bin()
        openstack_bin()
    except pytest.fail.Exception as e:
        pytest.exit(f"e2e: {e}", returncode=1)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(node) -> bool:
    return any(getattr(getattr(node, "rep_" + w, None), "failed", False) for w in ("setup", "call"))


class ServerFactory:
    """Makes servers for one test (or module); stops all of them and removes
    their data at teardown, and prints their output if a test failed."""

    def __init__(self, root: Path):
        self.root = root
        self.servers: list[Server] = []

    def data_dir(self, name: str = "data") -> Path:
        d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        return d

    def __call__(
        self,
        *extra_args: str,
        data_dir: Path | None = None,
        start: bool = True,
        name: str = "server",
        **kw,
    ) -> Server:
        s = Server(data_dir or self.data_dir(), *extra_args, name=name, **kw)
        self.servers.append(s)
        if start:
            s.start()
        return s

    def teardown(self, dump: bool) -> None:
        for s in self.servers:
            rc = s.stop()
            if dump:
                print(f"\n===== {s.name} on port {s.port} (exit code {rc}), {s.log_path} =====")
                print(s.log_tail())
        if os.environ.get("FERROSTACK_E2E_KEEP") == "1":
            print(f"(kept server data under {self.root})")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def server_factory(request) -> Iterator[ServerFactory]:
    """Start extra servers: `server_factory('--token-expiration', '2')`."""
    root = Path(tempfile.mkdtemp(prefix="ferrostack-e2e-"))
    f = ServerFactory(root)
    yield f
    f.teardown(dump=_failed(request.node))


@pytest.fixture
def server(server_factory) -> Server:
    """A fresh server for this test alone."""
    return server_factory()


@pytest.fixture(scope="module")
def module_server(request) -> Iterator[Server]:
    """One server shared by a whole test module (tests use unique names)."""
    root = Path(tempfile.mkdtemp(prefix="ferrostack-e2e-mod-"))
    f = ServerFactory(root)
    s = f()
    yield s
    f.teardown(dump=False)


@pytest.fixture(autouse=True)
def _dump_module_server_on_failure(request) -> Iterator[None]:
    """If a test that used the module-wide server fails, show that server's
    recent output in the test's report."""
    yield
    if "module_server" in request.fixturenames and _failed(request.node):
        s = request.getfixturevalue("module_server")
        print(f"\n===== module server on port {s.port}: last output =====")
        print(s.log_tail(6000))


@pytest.fixture
def api(module_server) -> Api:
    return module_server.api


@pytest.fixture
def uniq() -> str:
    """A short unique suffix for names created by one test."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def free_tcp_port() -> int:
    return free_port()
