"""State survives a restart of the server on the same data dir: resources,
role assignments, tokens and the Fernet keys."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

from harness import check, password_auth_body


def key_snapshot(repo: Path) -> dict[str, str]:
    assert repo.is_dir(), f"no key repository at {repo}"
    snap = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in repo.iterdir() if p.is_file()}
    assert snap, f"key repository {repo} is empty"
    return snap


def _populate(api, uniq: str) -> dict:
    project = api.create("projects", "project", {"name": f"rs-p-{uniq}", "description": "kept"})
    user = api.create("users", "user", {"name": f"rs-u-{uniq}", "password": "pw-restart", "email": "r@example.org"})
    group = api.create("groups", "group", {"name": f"rs-g-{uniq}"})
    role = api.create("roles", "role", {"name": f"rs-r-{uniq}"})
    member = api.role_id("member")
    check(api.put(f"projects/{project['id']}/users/{user['id']}/roles/{member}"), 204)
    check(api.put(f"projects/{project['id']}/groups/{group['id']}/roles/{role['id']}"), 204)
    check(api.put(f"groups/{group['id']}/users/{user['id']}"), 204)
    token, body = api.password_token(user["name"], "pw-restart", project_id=project["id"])
    roles = {r["name"] for r in body["roles"]}
    assert {"member", role["name"]} <= roles, body["roles"]
    return {"project": project, "user": user, "group": group, "role": role, "token": token, "body": body}


def _assert_all_there(api, st: dict) -> None:
    p = check(api.get(f"projects/{st['project']['id']}"), 200).json()["project"]
    assert (p["name"], p["description"]) == (st["project"]["name"], "kept")
    u = check(api.get(f"users/{st['user']['id']}"), 200).json()["user"]
    assert (u["name"], u.get("email")) == (st["user"]["name"], "r@example.org")
    assert check(api.get(f"groups/{st['group']['id']}"), 200).json()["group"]["name"] == st["group"]["name"]
    assert check(api.get(f"roles/{st['role']['id']}"), 200).json()["role"]["name"] == st["role"]["name"]
    check(api.request("HEAD", f"groups/{st['group']['id']}/users/{st['user']['id']}"), 204)

    ra = check(api.get("role_assignments", params={"user.id": st["user"]["id"], "effective": ""}), 200).json()
    got = {(a["role"]["id"], a["scope"]["project"]["id"]) for a in ra["role_assignments"]}
    assert (api.role_id("member"), st["project"]["id"]) in got, ra
    assert (st["role"]["id"], st["project"]["id"]) in got, ra

    # The token issued before the restart still validates, unchanged.
    r = check(api.validate(st["token"]), 200)
    body = r.json()["token"]
    assert body["expires_at"] == st["body"]["expires_at"]
    assert body["user"]["id"] == st["user"]["id"]
    assert body["project"]["id"] == st["project"]["id"]
    check(api.get("auth/projects", token=st["token"]), 200)
    # And the password still works.
    api.password_token(st["user"]["name"], "pw-restart", project_id=st["project"]["id"])


def test_restart_keeps_resources_tokens_and_keys(server, uniq):
    keys = server.data_dir / "fernet-keys"
    st = _populate(server.api, uniq)
    admin_token = server.api.admin_token
    keys_before = key_snapshot(keys)
    clouds_before = server.clouds()
    n_projects = len(check(server.api.get("projects"), 200).json()["projects"])

    rc = server.stop()
    assert rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM), f"SIGTERM exit code {rc}\n{server.log_tail()}"
    server.start()

    _assert_all_there(server.api, st)
    check(server.api.validate(admin_token, token=admin_token), 200)
    assert key_snapshot(keys) == keys_before, "Fernet keys changed across a restart"
    assert server.clouds() == clouds_before
    # The bootstrap did not run twice.
    assert len(check(server.api.get("projects"), 200).json()["projects"]) == n_projects
    admins = check(server.api.get("users", params={"name": "admin"}), 200).json()["users"]
    assert len(admins) == 1, admins
    server.openstack("project", "show", st["project"]["name"])


def test_restart_after_kill_keeps_acknowledged_writes(server, uniq):
    keys = server.data_dir / "fernet-keys"
    st = _populate(server.api, uniq)
    keys_before = key_snapshot(keys)

    # kill -9: no chance to flush anything that was not already durable.
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(5)
    server.start()

    _assert_all_there(server.api, st)
    assert key_snapshot(keys) == keys_before



def test_restart_with_another_admin_password_resets_it(server):
    """`--admin-password` on a restart is the admin's password from then on,
    as `keystone-manage bootstrap --bootstrap-password` resets it: the
    clouds.yaml the server rewrites holds a password that works."""
    old = server.admin_password
    old_token = server.api.admin_token
    server.stop()
    server.admin_password = "another-admin-pw"
    server.start()
    server.api.forget_admin_token()

    assert server.clouds()["clouds"]["ferrostack"]["auth"]["password"] == "another-admin-pw"
    server.api.password_token("admin", "another-admin-pw", project="admin")
    server.api.issue(password_auth_body("admin", old, project="admin"), expect=401)
    # Tokens got with the old password end with it.
    check(server.api.validate(old_token), 404)
    # The CLI, configured by the rewritten clouds.yaml, logs in.
    server.openstack("project", "show", "admin")

    # A restart with the same password changes nothing: tokens survive.
    token = server.api.admin_token
    server.restart()
    check(server.api.validate(token, token=token), 200)
