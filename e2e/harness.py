"""The Ferrostack end-to-end harness: server process, CLI runner, raw HTTP.

Every test talks to a real `ferrostack serve` process started from
$FERROSTACK_BIN on a free loopback port with a fresh data directory, either
through the real `openstack` CLI (python-openstackclient) or through raw HTTP
(`requests`).

Environment:
  FERROSTACK_BIN       the server binary (default: $CARGO_TARGET_DIR or
                       <repo>/target, then debug/ferrostack). Missing -> every
                       test that needs a server fails with a clear message.
  FERROSTACK_VENV      venv holding `openstack` (default <repo>/.cache/venv);
                       `openstack` on PATH is used first.
  FERROSTACK_E2E_KEEP  set to 1 to keep server data dirs after the run.
  FERROSTACK_E2E_READY_TIMEOUT  seconds to wait for readiness (default 15).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "adm1n-Secret-e2e"
READY_TIMEOUT = float(os.environ.get("FERROSTACK_E2E_READY_TIMEOUT", "15"))
STOP_TIMEOUT = 5.0
CLI_TIMEOUT = 90.0
HTTP_TIMEOUT = 15.0


# --------------------------------------------------------------------------
# Locating the binaries
# --------------------------------------------------------------------------


def ferrostack_bin() -> Path:
    env = os.environ.get("FERROSTACK_BIN")
    if env:
        path = Path(env)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
        path = target / "debug" / "ferrostack"
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"FERROSTACK_BIN={path} does not exist or is not executable: build it "
            "with `cargo build` (scripts/test does) or point FERROSTACK_BIN at "
            "the ferrostack binary",
            pytrace=False,
        )
    return path


def openstack_bin() -> str:
    found = shutil.which("openstack")
    if found:
        return found
    venv = Path(os.environ.get("FERROSTACK_VENV") or REPO / ".cache" / "venv")
    candidate = venv / "bin" / "openstack"
    if candidate.is_file():
        return str(candidate)
    pytest.fail(
        "the `openstack` CLI was not found on PATH nor in "
        f"{candidate}: run scripts/venv and put its bin/ on PATH",
        pytrace=False,
    )
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# CLI results
# --------------------------------------------------------------------------


class CliError(AssertionError):
    """An `openstack` call that did not do what the test expected."""


class CliResult:
    def __init__(self, argv: list[str], proc: subprocess.CompletedProcess):
        self.argv = argv
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:
        return (
            f"CliResult(argv={self.argv!r}, rc={self.returncode},\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr})"
        )


# Commands (as a word among the first three arguments) that print nothing,
# or plain text, and therefore take no `-f json`.
_NO_FORMAT_WORDS = {"delete", "add", "remove", "set", "unset", "revoke", "contains"}


def _wants_json(args: tuple[str, ...]) -> bool:
    if "-f" in args or "--format" in args:
        return False
    if args[:1] == ("--help",) or "--help" in args:
        return False
    return not any(a in _NO_FORMAT_WORDS for a in args[:4])


def cli_key(key: str) -> str:
    """A column name as the CLI prints it ('Fixed IP Address') or as the
    API names it ('fixed_ip_address'), normalized."""
    return key.lower().replace(" ", "_").replace("-", "_")


def field(obj: dict, name: str):
    """obj[name], matching 'Project ID', 'project_id' and 'project id' alike."""
    want = cli_key(name)
    for k, v in obj.items():
        if cli_key(k) == want:
            return v
    raise KeyError(f"{name!r} not in {sorted(obj)}: {obj}")


def column(rows: list[dict], name: str) -> list:
    return [field(r, name) for r in rows]


# --------------------------------------------------------------------------
# Raw HTTP
# --------------------------------------------------------------------------


def password_auth_body(
    user: str,
    password: str,
    *,
    project: str | None = None,
    project_id: str | None = None,
    user_domain_id: str = "default",
    user_is_id: bool = False,
    project_domain_id: str = "default",
    unscoped: bool = False,
) -> dict:
    user_ref: dict[str, Any] = {"password": password}
    if user_is_id:
        user_ref["id"] = user
    else:
        user_ref["name"] = user
        user_ref["domain"] = {"id": user_domain_id}
    body: dict[str, Any] = {
        "auth": {"identity": {"methods": ["password"], "password": {"user": user_ref}}}
    }
    if project_id is not None:
        body["auth"]["scope"] = {"project": {"id": project_id}}
    elif project is not None and not unscoped:
        body["auth"]["scope"] = {"project": {"name": project, "domain": {"id": project_domain_id}}}
    return body


def token_auth_body(token: str, *, project_id: str | None = None) -> dict:
    body: dict[str, Any] = {
        "auth": {"identity": {"methods": ["token"], "token": {"id": token}}}
    }
    if project_id is not None:
        body["auth"]["scope"] = {"project": {"id": project_id}}
    return body


class Api:
    """A thin `requests` wrapper for raw Identity v3 calls.

    Paths are relative to <public-url>/identity/v3 unless they start with
    `http`. `token=` sets X-Auth-Token (default: the admin token, fetched
    lazily); pass `token=None` to send no token at all.
    """

    _ADMIN = object()

    def __init__(self, server: "Server"):
        self.server = server
        self.session = requests.Session()
        self._admin_token: str | None = None

    @property
    def base(self) -> str:
        return self.server.identity_url + "/v3"

    def url(self, path: str) -> str:
        if path.startswith("http"):
            return path
        return self.base + "/" + path.lstrip("/")

    # -- tokens ------------------------------------------------------------

    def issue(self, body: dict, *, expect: int | None = 201) -> requests.Response:
        r = self.session.post(self.url("auth/tokens"), json=body, timeout=HTTP_TIMEOUT)
        if expect is not None:
            check(r, expect)
        return r

    def password_token(self, user: str, password: str, **kw) -> tuple[str, dict]:
        """Issue a token with a password; returns (token id, token body)."""
        r = self.issue(password_auth_body(user, password, **kw))
        return r.headers["X-Subject-Token"], r.json()["token"]

    def rescope(self, token: str, project_id: str | None = None) -> tuple[str, dict]:
        r = self.issue(token_auth_body(token, project_id=project_id))
        return r.headers["X-Subject-Token"], r.json()["token"]

    @property
    def admin_token(self) -> str:
        if self._admin_token is None:
            self._admin_token, _ = self.password_token(
                "admin", self.server.admin_password, project="admin"
            )
        return self._admin_token

    def forget_admin_token(self) -> None:
        self._admin_token = None

    def validate(self, subject: str, *, token: Any = _ADMIN) -> requests.Response:
        """GET /v3/auth/tokens with X-Subject-Token (as admin by default)."""
        return self.request("GET", "auth/tokens", token=token, headers={"X-Subject-Token": subject})

    # -- generic -----------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        token: Any = _ADMIN,
        headers: dict | None = None,
        **kw,
    ) -> requests.Response:
        h = dict(headers or {})
        if token is Api._ADMIN:
            token = self.admin_token
        if token is not None:
            h["X-Auth-Token"] = token
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self.session.request(method, self.url(path), headers=h, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json_body: Any = None, **kw) -> requests.Response:
        if json_body is not None:
            kw["json"] = json_body
        return self.request("POST", path, **kw)

    def patch(self, path: str, json_body: Any = None, **kw) -> requests.Response:
        if json_body is not None:
            kw["json"] = json_body
        return self.request("PATCH", path, **kw)

    def put(self, path: str, **kw) -> requests.Response:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.request("DELETE", path, **kw)

    # -- conveniences (admin) ----------------------------------------------

    def create(self, collection: str, key: str, attrs: dict) -> dict:
        r = self.post(collection, {key: attrs})
        check(r, 201)
        return r.json()[key]

    def role_id(self, name: str) -> str:
        r = self.get("roles", params={"name": name})
        check(r, 200)
        roles = [x for x in r.json()["roles"] if x["name"] == name]
        assert len(roles) == 1, f"role {name!r}: {r.json()}"
        return roles[0]["id"]

    def project_id(self, name: str) -> str:
        r = self.get("projects", params={"name": name})
        check(r, 200)
        projects = [x for x in r.json()["projects"] if x["name"] == name]
        assert len(projects) == 1, f"project {name!r}: {r.json()}"
        return projects[0]["id"]

    def user_id(self, name: str) -> str:
        r = self.get("users", params={"name": name})
        check(r, 200)
        users = [x for x in r.json()["users"] if x["name"] == name]
        assert len(users) == 1, f"user {name!r}: {r.json()}"
        return users[0]["id"]


def describe(r: requests.Response) -> str:
    req = r.request
    body = req.body
    if isinstance(body, bytes):
        body = body[:500].decode("utf-8", "replace") + ("…" if len(req.body) > 500 else "")
    elif isinstance(body, str) and len(body) > 500:
        body = body[:500] + "…"
    shown = {k: v for k, v in req.headers.items() if k.lower().startswith("x-") or k.lower() == "content-type"}
    return (
        f"{req.method} {req.url}\nrequest headers: {shown}\nrequest body: {body}\n"
        f"-> {r.status_code} {r.reason}\nresponse headers: {dict(r.headers)}\n"
        f"response body: {r.text[:2000]}"
    )


def check(r: requests.Response, *statuses: int) -> requests.Response:
    """Assert the response status is one of `statuses`, with a full dump if not."""
    assert r.status_code in statuses, f"expected {statuses}, got:\n{describe(r)}"
    return r


def error_of(r: requests.Response, *statuses: int) -> dict:
    """Assert an error status and Keystone's error body; return body['error']."""
    check(r, *statuses)
    try:
        body = r.json()
    except ValueError:
        raise AssertionError(f"error response is not JSON:\n{describe(r)}") from None
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), (
        f"not a Keystone error body:\n{describe(r)}"
    )
    err = body["error"]
    assert err.get("code") == r.status_code, f"error.code != status:\n{describe(r)}"
    assert isinstance(err.get("title"), str) and err["title"], describe(r)
    assert isinstance(err.get("message"), str) and err["message"], describe(r)
    return err


def flip_token_char(token: str, pos: int) -> str:
    """Change one character of a base64url token so that the decoded byte it
    carries changes in a significant bit (XOR 32 on its 6-bit value: the top
    bit, which is never padding)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    c = token[pos]
    if c in alphabet:
        new = alphabet[alphabet.index(c) ^ 32]
    else:  # '=' or something unexpected: replace by a letter
        new = "A" if c != "A" else "B"
    out = token[:pos] + new + token[pos + 1 :]
    assert out != token and len(out) == len(token)
    return out


def b64url_decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Server:
    """One `ferrostack serve` process on 127.0.0.1:<free port>."""

    def __init__(
        self,
        data_dir: Path,
        *extra_args: str,
        port: int | None = None,
        admin_password: str = ADMIN_PASSWORD,
        name: str = "server",
    ):
        self.bin = ferrostack_bin()
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.admin_password = admin_password
        self.extra_args = list(extra_args)
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-{name}-{self.port}.log"
        self._log = None
        self.starts = 0
        self.api = Api(self)

    # -- addresses ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def identity_url(self) -> str:
        return self.url + "/identity"

    @property
    def clouds_yaml(self) -> Path:
        return self.data_dir / "clouds.yaml"

    @property
    def argv(self) -> list[str]:
        return [
            str(self.bin),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--admin-password",
            self.admin_password,
            "--password-hash-rounds",
            "4",
            # The node agent changes the host's network: only the data plane
            # tests run one, each in namespaces of its own.
            *([] if "--agent" in self.extra_args else ["--agent", "off"]),
            *self.extra_args,
        ]

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT) -> "Server":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.pop("FERROSTACK_ADMIN_PASSWORD", None)
        env.setdefault("RUST_BACKTRACE", "1")
        env["NO_COLOR"] = "1"
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(
                    f"ferrostack exited with code {self.proc.returncode} before it was "
                    f"ready\nargv: {self.argv}\n--- server output ---\n{self.log_tail()}",
                    pytrace=False,
                )
            try:
                r = requests.get(self.identity_url + "/v3", timeout=1.0)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.1)
        self.stop()
        pytest.fail(
            f"ferrostack not ready within {timeout}s (GET {self.identity_url}/v3: {last})\n"
            f"argv: {self.argv}\n--- server output ---\n{self.log_tail()}",
            pytrace=False,
        )

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT seconds. Returns the exit code."""
        proc, self.proc = self.proc, None
        rc = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(STOP_TIMEOUT)
            rc = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        # Drop pooled keep-alive connections to the old process; keep the
        # Api object (and its cached admin token) so tests can reuse it.
        self.api.session.close()
        self.api.session = requests.Session()
        return rc

    def restart(self, *extra_args: str) -> "Server":
        """Stop and start again on the same port and data dir. New extra args,
        if given, replace the old ones."""
        self.stop()
        if extra_args:
            self.extra_args = list(extra_args)
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, limit: int = 8000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no output captured)"
        text = _ANSI.sub("", data[-limit * 2 :].decode("utf-8", "replace"))[-limit:]
        return text if text.strip() else "(no output)"

    # -- ferrostack subcommands ----------------------------------------------

    def run_bin(self, *args: str, timeout: float = 60.0, check_rc: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        p = subprocess.run(
            [str(self.bin), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if check_rc and p.returncode != 0:
            raise AssertionError(
                f"`ferrostack {' '.join(args)}` exited {p.returncode}\n"
                f"--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}"
            )
        return p

    # -- clouds.yaml and the CLI -----------------------------------------------

    def clouds(self) -> dict:
        """The clouds.yaml the server wrote, parsed."""
        assert self.clouds_yaml.is_file(), f"server did not write {self.clouds_yaml}"
        return yaml.safe_load(self.clouds_yaml.read_text())

    def write_clouds(self, extra: dict[str, dict], path: Path | None = None) -> Path:
        """Write a clouds.yaml holding the server's own clouds plus `extra`
        entries; missing keys of each extra entry (auth_url, region_name,
        identity_api_version, interface) are filled in from `ferrostack`."""
        data = self.clouds()
        base = data["clouds"]["ferrostack"]
        for name, entry in extra.items():
            entry = json.loads(json.dumps(entry))  # deep copy
            entry.setdefault("auth", {}).setdefault("auth_url", base["auth"]["auth_url"])
            for k in ("region_name", "identity_api_version", "interface"):
                if k in base:
                    entry.setdefault(k, base[k])
            data["clouds"][name] = entry
        path = path or self.data_dir.parent / f"clouds-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def password_cloud(
        self, user: str, password: str, project: str | None, *, domain: str = "Default"
    ) -> dict:
        auth: dict[str, Any] = {
            "username": user,
            "password": password,
            "user_domain_name": domain,
        }
        if project is not None:
            auth["project_name"] = project
            auth["project_domain_name"] = domain
        return {"auth_type": "password", "auth": auth}

    def openstack(
        self,
        *args: str,
        cloud: str = "ferrostack",
        config: Path | None = None,
        env: dict[str, str] | None = None,
        expect_fail: bool = False,
        json_output: bool | None = None,
        timeout: float = CLI_TIMEOUT,
    ) -> Any:
        """Run `openstack --os-cloud CLOUD ARGS [-f json]`.

        Returns the parsed JSON (when -f json applies), else a CliResult. With
        expect_fail=True the command must exit non-zero and a CliResult is
        returned (its .output holds stdout+stderr). Raises CliError otherwise.
        """
        if json_output is None:
            json_output = _wants_json(args) and not expect_fail
        argv = [openstack_bin(), "--os-cloud", cloud, *args]
        if json_output:
            argv += ["-f", "json"]
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        run_env["OS_CLIENT_CONFIG_FILE"] = str(config or self.clouds_yaml)
        # Never pick up a secure.yaml or a cache from the user's home.
        run_env["OS_CLIENT_SECURE_FILE"] = str(self.data_dir.parent / "no-secure.yaml")
        run_env["PYTHONWARNINGS"] = "ignore"
        run_env.update(env or {})
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=run_env,
            )
        except subprocess.TimeoutExpired as e:
            raise CliError(
                f"`{' '.join(argv[1:])}` timed out after {timeout}s\n"
                f"--- stdout ---\n{e.stdout}\n--- stderr ---\n{e.stderr}"
            ) from None
        result = CliResult(argv[1:], proc)
        if expect_fail:
            if proc.returncode == 0:
                raise CliError(f"expected `openstack` to fail but it succeeded:\n{result!r}")
            return result
        if proc.returncode != 0:
            raise CliError(f"`openstack` failed:\n{result!r}\n--- server output ---\n{self.log_tail(3000)}")
        if not json_output:
            return result
        try:
            return json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            raise CliError(f"`openstack` printed no valid JSON:\n{result!r}") from None
