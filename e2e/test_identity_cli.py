"""Identity (Keystone v3) through the real, unmodified `openstack` CLI.

All tests of this module share one server (`module_server`); each test uses
names of its own (suffix `uniq`) except the issue's story, which uses exactly
`demo` and `alice` and is set up once by the `story` fixture.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from harness import Server, check, cli_key, column, field

HEX32 = re.compile(r"^[0-9a-f]{32}$")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def implied_closure(pairs: set[tuple[str, str]], role: str) -> set[str]:
    """Every role that `role` implies, directly or transitively."""
    seen: set[str] = set()
    todo = [role]
    while todo:
        cur = todo.pop()
        for prior, implied in pairs:
            if prior == cur and implied not in seen:
                seen.add(implied)
                todo.append(implied)
    return seen


def assert_http_status_in_output(result, status: int) -> None:
    assert re.search(rf"\b{status}\b", result.output), (
        f"expected HTTP {status} in the CLI's output:\n{result!r}"
    )


@pytest.fixture(scope="module")
def srv(module_server) -> Server:
    return module_server


@pytest.fixture(scope="module")
def os_(srv):
    """`os_(...)` runs `openstack ...` as admin on the module's server."""
    return srv.openstack


@pytest.fixture(scope="module")
def story(srv):
    """The issue's story, exactly as a person types it."""
    os_ = srv.openstack
    project = os_("project", "create", "demo")
    user = os_("user", "create", "--project", "demo", "--password", "s3cret", "alice")
    os_("role", "add", "--user", "alice", "--project", "demo", "member")
    clouds = srv.write_clouds({"alice": srv.password_cloud("alice", "s3cret", "demo")})
    return {"project": project, "user": user, "clouds": clouds}


def as_alice(srv, story, *args, **kw):
    return srv.openstack(*args, cloud="alice", config=story["clouds"], **kw)


# --------------------------------------------------------------------------
# bootstrap, tokens, catalog
# --------------------------------------------------------------------------


def test_bootstrap_writes_clouds_yaml_and_admin_openrc(srv):
    cloud = srv.clouds()["clouds"]["ferrostack"]
    auth = cloud["auth"]
    assert auth["auth_url"].rstrip("/") == srv.identity_url
    assert auth["username"] == "admin"
    assert auth["password"] == srv.admin_password
    assert auth["project_name"] == "admin"
    assert auth["user_domain_name"] == "Default"
    assert auth["project_domain_name"] == "Default"
    assert cloud["region_name"] == "RegionOne"
    assert str(cloud["identity_api_version"]) == "3"
    openrc = (srv.data_dir / "admin-openrc").read_text()
    assert re.search(r"OS_AUTH_URL=['\"]?" + re.escape(srv.identity_url), openrc), openrc
    assert re.search(r"OS_USERNAME=['\"]?admin\b", openrc), openrc
    assert re.search(r"OS_PROJECT_NAME=['\"]?admin\b", openrc), openrc


def test_token_issue_then_revoke_makes_token_invalid(srv, os_):
    tok = os_("token", "issue")
    token = field(tok, "id")
    assert field(tok, "project_id") == srv.api.project_id("admin")
    assert field(tok, "user_id") == srv.api.user_id("admin")
    expires = datetime.fromisoformat(field(tok, "expires").replace("Z", "+00:00"))
    assert expires > datetime.now(timezone.utc)

    check(srv.api.validate(token), 200)
    check(srv.api.get("auth/projects", token=token), 200)

    os_("token", "revoke", token)

    check(srv.api.validate(token), 404)
    check(srv.api.get("auth/projects", token=token), 401)
    check(srv.api.get("auth/tokens", token=token, headers={"X-Subject-Token": token}), 401)


def test_catalog_list_shows_identity_endpoint(srv, os_):
    rows = os_("catalog", "list")
    identity = [r for r in rows if field(r, "type") == "identity"]
    assert len(identity) == 1, rows
    endpoints = field(identity[0], "endpoints")
    text = str(endpoints)
    assert srv.identity_url in text, endpoints
    assert "public" in text and "RegionOne" in text, endpoints
    shown = os_("catalog", "show", "identity")
    assert field(shown, "type") == "identity"


# --------------------------------------------------------------------------
# CRUD
# --------------------------------------------------------------------------


def test_project_crud(os_, uniq):
    name = f"proj-{uniq}"
    p = os_("project", "create", "--description", "first", name)
    pid = field(p, "id")
    assert HEX32.match(pid), p
    assert field(p, "name") == name
    assert field(p, "description") == "first"
    assert field(p, "enabled") is True
    assert field(p, "domain_id") == "default"

    assert name in column(os_("project", "list"), "name")
    assert field(os_("project", "show", name), "id") == pid
    assert field(os_("project", "show", pid), "name") == name

    os_("project", "set", "--description", "second", "--disable", name)
    p = os_("project", "show", pid)
    assert field(p, "description") == "second"
    assert field(p, "enabled") is False
    os_("project", "set", "--name", f"{name}-renamed", "--enable", pid)
    p = os_("project", "show", pid)
    assert field(p, "name") == f"{name}-renamed"
    assert field(p, "enabled") is True

    os_("project", "delete", pid)
    os_("project", "show", pid, expect_fail=True)
    assert pid not in column(os_("project", "list"), "id")


def test_user_crud(os_, uniq):
    name = f"user-{uniq}"
    u = os_("user", "create", "--password", "pw-1", "--email", "a@example.org", "--description", "d1", name)
    uid = field(u, "id")
    assert HEX32.match(uid), u
    assert field(u, "name") == name
    assert field(u, "domain_id") == "default"
    assert field(u, "enabled") is True
    assert field(u, "email") == "a@example.org"
    assert "password" not in {k.lower() for k in u}, f"user create echoes the password: {u}"

    assert name in column(os_("user", "list"), "name")
    assert field(os_("user", "show", name), "id") == uid
    assert field(os_("user", "show", uid), "name") == name

    os_("user", "set", "--email", "b@example.org", "--disable", name)
    u = os_("user", "show", uid)
    assert field(u, "email") == "b@example.org"
    assert field(u, "enabled") is False

    os_("user", "delete", name)
    os_("user", "show", uid, expect_fail=True)
    assert uid not in column(os_("user", "list"), "id")


def test_group_crud_and_membership(os_, uniq):
    gname, uname = f"group-{uniq}", f"member-{uniq}"
    g = os_("group", "create", "--description", "first", gname)
    gid = field(g, "id")
    assert HEX32.match(gid), g
    assert field(g, "name") == gname
    assert field(g, "domain_id") == "default"
    uid = field(os_("user", "create", "--password", "pw", uname), "id")

    assert gname in column(os_("group", "list"), "name")
    assert field(os_("group", "show", gname), "id") == gid
    assert field(os_("group", "show", gid), "name") == gname

    os_("group", "set", "--description", "second", gname)
    assert field(os_("group", "show", gid), "description") == "second"

    os_("group", "add", "user", gname, uname)
    r = os_("group", "contains", "user", gname, uname)
    assert f"{uname} in group {gname}" in r.stdout, r
    assert uname in column(os_("user", "list", "--group", gname), "name")
    assert gname in column(os_("group", "list", "--user", uname), "name")

    os_("group", "remove", "user", gname, uname)
    r = os_("group", "contains", "user", gname, uname)
    assert "not in group" in r.output, r
    assert uname not in column(os_("user", "list", "--group", gname), "name")

    os_("group", "delete", gname)
    os_("group", "show", gid, expect_fail=True)
    assert gid not in column(os_("group", "list"), "id")
    os_("user", "delete", uid)


def test_role_crud(os_, uniq):
    name = f"role-{uniq}"
    r = os_("role", "create", "--description", "a role", name)
    rid = field(r, "id")
    assert HEX32.match(rid), r
    assert field(r, "name") == name

    names = column(os_("role", "list"), "name")
    assert name in names
    assert {"admin", "member", "reader"} <= set(names), names
    assert field(os_("role", "show", name), "id") == rid
    assert field(os_("role", "show", rid), "name") == name

    os_("role", "set", "--name", f"{name}-new", name)
    assert field(os_("role", "show", rid), "name") == f"{name}-new"

    os_("role", "delete", rid)
    os_("role", "show", rid, expect_fail=True)
    assert rid not in column(os_("role", "list"), "id")


def test_domain_crud_disable_before_delete(os_, uniq):
    name = f"dom-{uniq}"
    d = os_("domain", "create", "--description", "first", name)
    did = field(d, "id")
    assert HEX32.match(did), d
    assert field(d, "enabled") is True
    names = column(os_("domain", "list"), "name")
    assert name in names and "Default" in names, names
    assert field(os_("domain", "show", name), "id") == did
    assert field(os_("domain", "show", "default"), "name") == "Default"

    # Keystone refuses to delete an enabled domain.
    os_("domain", "delete", did, expect_fail=True)
    assert field(os_("domain", "show", did), "name") == name

    os_("domain", "set", "--description", "second", "--disable", name)
    d = os_("domain", "show", did)
    assert field(d, "enabled") is False
    assert field(d, "description") == "second"

    os_("domain", "delete", name)
    os_("domain", "show", did, expect_fail=True)
    assert did not in column(os_("domain", "list"), "id")


def test_project_in_other_domain(os_, uniq):
    dname, pname = f"dom2-{uniq}", f"proj2-{uniq}"
    did = field(os_("domain", "create", dname), "id")
    p = os_("project", "create", "--domain", dname, pname)
    assert field(p, "domain_id") == did
    assert field(os_("project", "show", "--domain", dname, pname), "id") == field(p, "id")
    os_("project", "delete", "--domain", dname, pname)
    os_("domain", "set", "--disable", dname)
    os_("domain", "delete", dname)


def test_region_crud(os_, uniq):
    rid = f"Region-{uniq}"
    r = os_("region", "create", "--description", "first", rid)
    assert field(r, "region") == rid
    assert field(r, "description") == "first"
    ids = column(os_("region", "list"), "region")
    assert rid in ids and "RegionOne" in ids, ids
    assert field(os_("region", "show", rid), "description") == "first"

    os_("region", "set", "--description", "second", rid)
    assert field(os_("region", "show", rid), "description") == "second"

    os_("region", "delete", rid)
    os_("region", "show", rid, expect_fail=True)
    assert rid not in column(os_("region", "list"), "region")


def test_service_crud(os_, uniq):
    name, stype = f"svc-{uniq}", f"type-{uniq}"
    s = os_("service", "create", "--name", name, "--description", "first", stype)
    sid = field(s, "id")
    assert HEX32.match(sid), s
    assert field(s, "name") == name
    assert field(s, "type") == stype
    assert field(s, "enabled") is True

    rows = os_("service", "list")
    assert name in column(rows, "name")
    assert "identity" in column(rows, "type")
    assert field(os_("service", "show", name), "id") == sid
    assert field(os_("service", "show", sid), "name") == name

    os_("service", "set", "--description", "second", "--disable", sid)
    s = os_("service", "show", sid)
    assert field(s, "description") == "second"
    assert field(s, "enabled") is False

    os_("service", "delete", sid)
    os_("service", "show", sid, expect_fail=True)
    assert sid not in column(os_("service", "list"), "id")


def test_endpoint_crud(os_, uniq):
    name = f"epsvc-{uniq}"
    sid = field(os_("service", "create", "--name", name, f"eptype-{uniq}"), "id")
    url = f"http://127.0.0.1:9/{uniq}"
    e = os_("endpoint", "create", "--region", "RegionOne", name, "public", url)
    eid = field(e, "id")
    assert HEX32.match(eid), e
    assert field(e, "url") == url
    assert field(e, "interface") == "public"
    assert field(e, "region") == "RegionOne"
    assert field(e, "service_id") == sid
    assert field(e, "enabled") is True

    rows = os_("endpoint", "list", "--service", name)
    assert column(rows, "id") == [eid], rows
    assert eid in column(os_("endpoint", "list"), "id")
    assert field(os_("endpoint", "show", eid), "url") == url

    os_("endpoint", "set", "--url", url + "/v2", "--interface", "internal", eid)
    e = os_("endpoint", "show", eid)
    assert field(e, "url") == url + "/v2"
    assert field(e, "interface") == "internal"

    os_("endpoint", "delete", eid)
    os_("endpoint", "show", eid, expect_fail=True)
    assert eid not in column(os_("endpoint", "list"), "id")
    os_("service", "delete", sid)


def test_duplicate_names_conflict(os_, uniq):
    pname, uname, gname, rname = f"dup-p-{uniq}", f"dup-u-{uniq}", f"dup-g-{uniq}", f"dup-r-{uniq}"
    os_("project", "create", pname)
    assert_http_status_in_output(os_("project", "create", pname, expect_fail=True), 409)
    os_("user", "create", uname)
    assert_http_status_in_output(os_("user", "create", uname, expect_fail=True), 409)
    os_("group", "create", gname)
    assert_http_status_in_output(os_("group", "create", gname, expect_fail=True), 409)
    os_("role", "create", rname)
    assert_http_status_in_output(os_("role", "create", rname, expect_fail=True), 409)
    # Exactly one of each exists.
    assert column(os_("project", "list"), "name").count(pname) == 1
    assert column(os_("user", "list"), "name").count(uname) == 1


# --------------------------------------------------------------------------
# The issue's story: demo, alice, member
# --------------------------------------------------------------------------


def test_story_creates_demo_alice_and_member_assignment(story):
    assert field(story["project"], "name") == "demo"
    assert field(story["user"], "name") == "alice"
    assert field(story["user"], "default_project_id") == field(story["project"], "id")


def test_role_assignment_list_names_effective_expands_implied_roles(os_, story):
    rows = os_("role", "assignment", "list", "--names", "--effective", "--user", "alice")
    got = {(field(r, "role"), field(r, "user"), field(r, "project")) for r in rows}
    assert ("member", "alice@Default", "demo@Default") in got, rows
    # member implies reader, so the effective list shows reader too.
    assert ("reader", "alice@Default", "demo@Default") in got, rows
    assert not any(field(r, "role") == "admin" for r in rows), rows

    # Without --effective only the direct assignment shows.
    rows = os_("role", "assignment", "list", "--names", "--user", "alice")
    assert {(field(r, "role"), field(r, "project")) for r in rows} == {("member", "demo@Default")}, rows

    # Filter by project: alice/member is there among others.
    rows = os_("role", "assignment", "list", "--names", "--project", "demo")
    assert ("member", "alice@Default") in {(field(r, "role"), field(r, "user")) for r in rows}, rows


def test_alice_project_list_my_projects_shows_only_demo(srv, story):
    rows = as_alice(srv, story, "project", "list", "--my-projects")
    assert column(rows, "name") == ["demo"], rows


def test_alice_user_list_is_forbidden(srv, story):
    r = as_alice(srv, story, "user", "list", expect_fail=True)
    assert_http_status_in_output(r, 403)


def test_alice_cannot_show_admin_project(srv, story):
    as_alice(srv, story, "project", "show", "admin", expect_fail=True)


def test_alice_token_issue(srv, story):
    tok = as_alice(srv, story, "token", "issue")
    assert field(tok, "project_id") == field(story["project"], "id")
    assert field(tok, "user_id") == field(story["user"], "id")
    body = check(srv.api.validate(field(tok, "id")), 200).json()["token"]
    roles = {r["name"] for r in body["roles"]}
    assert "member" in roles and "admin" not in roles, body["roles"]


def test_implied_role_create_and_list(os_, srv, uniq):
    prior, implied = f"prior-{uniq}", f"implied-{uniq}"
    prior_id = field(os_("role", "create", prior), "id")
    implied_id = field(os_("role", "create", implied), "id")
    created = os_("implied", "role", "create", "--implied-role", implied, prior)
    assert field(created, "prior_role") == prior_id, created
    assert field(created, "implies") == implied_id, created

    rows = os_("implied", "role", "list")
    pairs = {(field(r, "prior role name"), field(r, "implied role name")) for r in rows}
    assert (prior, implied) in pairs, rows
    # The bootstrap's chain: admin implies member (directly or through
    # another role, as Keystone's `manager`), member implies reader.
    assert ("member", "reader") in pairs, rows
    assert "member" in implied_closure(pairs, "admin"), rows

    # An assignment of the prior role gives the implied one effectively.
    user, project = f"imp-u-{uniq}", f"imp-p-{uniq}"
    os_("project", "create", project)
    os_("user", "create", "--password", "pw", user)
    os_("role", "add", "--user", user, "--project", project, prior)
    rows = os_("role", "assignment", "list", "--names", "--effective", "--user", user)
    assert {field(r, "role") for r in rows} == {prior, implied}, rows

    os_("implied", "role", "delete", "--implied-role", implied, prior)
    rows = os_("implied", "role", "list")
    assert (prior, implied) not in {(field(r, "prior role name"), field(r, "implied role name")) for r in rows}
    rows = os_("role", "assignment", "list", "--names", "--effective", "--user", user)
    assert {field(r, "role") for r in rows} == {prior}, rows


def test_user_set_password_makes_old_password_fail(srv, os_, uniq):
    user, project = f"pw-u-{uniq}", f"pw-p-{uniq}"
    os_("project", "create", project)
    os_("user", "create", "--password", "old-pass", user)
    os_("role", "add", "--user", user, "--project", project, "member")
    clouds = srv.write_clouds(
        {
            "old": srv.password_cloud(user, "old-pass", project),
            "new": srv.password_cloud(user, "new-pass", project),
        }
    )
    srv.openstack("token", "issue", cloud="old", config=clouds)
    srv.openstack("token", "issue", cloud="new", config=clouds, expect_fail=True)

    os_("user", "set", "--password", "new-pass", user)

    r = srv.openstack("token", "issue", cloud="old", config=clouds, expect_fail=True)
    assert_http_status_in_output(r, 401)
    srv.openstack("token", "issue", cloud="new", config=clouds)


# --------------------------------------------------------------------------
# Application credentials
# --------------------------------------------------------------------------


def _appcred_cloud(cred: dict) -> dict:
    return {
        "auth_type": "v3applicationcredential",
        "auth": {
            "application_credential_id": field(cred, "id"),
            "application_credential_secret": field(cred, "secret"),
        },
    }


def test_application_credential_with_role_subset_authenticates(srv, os_, uniq):
    name = f"ac-{uniq}"
    cred = os_("application", "credential", "create", "--role", "member", name)
    assert field(cred, "name") == name
    assert field(cred, "secret"), cred
    assert field(cred, "unrestricted") is False
    assert field(cred, "project_id") == srv.api.project_id("admin")
    roles = field(cred, "roles")
    assert "member" in str(roles) and "admin" not in str(roles), roles

    assert name in column(os_("application", "credential", "list"), "name")
    shown = os_("application", "credential", "show", name)
    assert field(shown, "id") == field(cred, "id")
    assert "secret" not in {cli_key(k) for k in shown}, f"show reveals the secret: {shown}"

    clouds = srv.write_clouds({"appcred": _appcred_cloud(cred)})
    tok = srv.openstack("token", "issue", cloud="appcred", config=clouds)
    assert field(tok, "project_id") == srv.api.project_id("admin")
    assert field(tok, "user_id") == srv.api.user_id("admin")

    body = check(srv.api.validate(field(tok, "id")), 200).json()["token"]
    token_roles = {r["name"] for r in body["roles"]}
    assert "member" in token_roles, body["roles"]
    assert "admin" not in token_roles, f"app credential token carries roles beyond its subset: {body['roles']}"
    assert "application_credential" in body["methods"], body["methods"]
    # ... and so it has no admin powers.
    check(srv.api.get("users", token=field(tok, "id")), 403)

    # A restricted application credential cannot make another one.
    r = srv.openstack(
        "application", "credential", "create", "--role", "member", f"{name}-child",
        cloud="appcred", config=clouds, expect_fail=True,
    )
    assert_http_status_in_output(r, 403)
    assert f"{name}-child" not in column(os_("application", "credential", "list"), "name")

    # Deleting it stops it from authenticating.
    os_("application", "credential", "delete", name)
    srv.openstack("token", "issue", cloud="appcred", config=clouds, expect_fail=True)


def test_application_credential_with_expiration(srv, os_, uniq):
    name = f"ac-exp-{uniq}"
    when = (datetime.now(timezone.utc) + timedelta(days=30)).replace(microsecond=0)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S")
    cred = os_("application", "credential", "create", "--role", "member", "--expiration", stamp, name)
    expires = field(cred, "expires_at")
    assert expires and expires.startswith(stamp), cred
    assert field(os_("application", "credential", "show", name), "expires_at").startswith(stamp)

    clouds = srv.write_clouds({"appcred": _appcred_cloud(cred)})
    tok = srv.openstack("token", "issue", cloud="appcred", config=clouds)
    token_expires = datetime.fromisoformat(field(tok, "expires").replace("Z", "+00:00"))
    assert token_expires <= when + timedelta(seconds=1)
    os_("application", "credential", "delete", name)


def test_unrestricted_application_credential_can_create_another(srv, os_, uniq):
    name = f"ac-unr-{uniq}"
    cred = os_("application", "credential", "create", "--role", "member", "--unrestricted", name)
    assert field(cred, "unrestricted") is True
    clouds = srv.write_clouds({"appcred": _appcred_cloud(cred)})
    child = srv.openstack(
        "application", "credential", "create", "--role", "member", f"{name}-child", cloud="appcred", config=clouds
    )
    assert field(child, "name") == f"{name}-child"
    os_("application", "credential", "delete", f"{name}-child")
    os_("application", "credential", "delete", name)


def test_application_credential_without_roles_gets_the_creators_token_roles(srv, os_, uniq):
    """Keystone: with no roles given, the credential gets the roles of the
    token that creates it."""
    name = f"ac-all-{uniq}"
    cred = os_("application", "credential", "create", name)
    roles = str(field(cred, "roles"))
    assert "admin" in roles and "member" in roles, cred
    clouds = srv.write_clouds({"appcred": _appcred_cloud(cred)})
    tok = srv.openstack("token", "issue", cloud="appcred", config=clouds)
    body = check(srv.api.validate(field(tok, "id")), 200).json()["token"]
    assert "admin" in {r["name"] for r in body["roles"]}, body["roles"]
    os_("application", "credential", "delete", name)
