"""Bad input to the Identity API: every malformed request gets a 4xx with
Keystone's error body whose message names the problem, and creates nothing.

Limits follow Keystone: project and domain names 1-64 characters, user and
role names 1-255 (keystone/*/schema.py); group names 1-64 (Keystone's schema
says 255 but its database column holds 64 and it answers 400 beyond). Create
request bodies are objects whose top level holds only the resource key.
"""

from __future__ import annotations

import json
import re

import pytest

from harness import Api, check, error_of

COLLECTIONS = {
    "project": "projects",
    "user": "users",
    "group": "groups",
    "role": "roles",
    "domain": "domains",
}


def names_in(api: Api, collection: str) -> list[str]:
    r = check(api.get(collection), 200)
    return [x.get("name") for x in r.json()[collection]]


def assert_nothing_named(api: Api, marker: str) -> None:
    for collection in ("projects", "users", "groups", "roles", "domains"):
        found = [n for n in names_in(api, collection) if isinstance(n, str) and marker in n]
        assert not found, f"{collection} created despite the error: {found}"


def post_raw(api: Api, path: str, data: bytes, content_type: str | None = "application/json"):
    headers = {"Content-Type": content_type} if content_type else {}
    return api.post(path, data=data, headers=headers)


def assert_message_names(err: dict, *words: str) -> None:
    msg = err["message"].lower()
    assert any(w.lower() in msg for w in words), f"error message does not name {words}: {err}"


# --------------------------------------------------------------------------
# Malformed JSON
# --------------------------------------------------------------------------


MALFORMED = [
    b'{"project": {"name": "MARK"',
    b'{"project": {"name": "MARK",}}',
    b"{'project': {'name': 'MARK'}}",
    b"project=MARK",
    b'{"project": {"name": "MARK"}} trailing',
    b'{"project": {"name": "MARK\xff\xfe"}}',
]


@pytest.mark.parametrize("body", MALFORMED, ids=["truncated", "trailing-comma", "single-quotes", "form", "trailing-garbage", "bad-utf8"])
def test_malformed_json_is_400_naming_json(api, uniq, body):
    marker = f"badjson-{uniq}"
    r = post_raw(api, "projects", body.replace(b"MARK", marker.encode()))
    err = error_of(r, 400)
    assert_message_names(err, "json", "utf-8", "utf8", "decode", "body")
    assert_nothing_named(api, marker)


def test_malformed_json_at_auth_is_400(api):
    err = error_of(post_raw(api, "auth/tokens", b'{"auth": {"identity": '), 400)
    assert_message_names(err, "json", "body")


@pytest.mark.parametrize("body", [b"", b"null", b"[]", b'"project"', b"42"], ids=["empty", "null", "array", "string", "number"])
def test_non_object_body_is_400(api, body):
    error_of(post_raw(api, "projects", body), 400)


def test_non_json_content_type_is_refused(api, uniq):
    marker = f"ctype-{uniq}"
    r = post_raw(api, "projects", json.dumps({"project": {"name": marker}}).encode(), "text/plain")
    error_of(r, 400, 415)
    assert_nothing_named(api, marker)


# --------------------------------------------------------------------------
# Wrong types
# --------------------------------------------------------------------------


WRONG_TYPES = [
    ("projects", {"project": {"name": "MARK", "enabled": "yes"}}, "enabled"),
    ("projects", {"project": {"name": "MARK", "enabled": 1}}, "enabled"),
    ("projects", {"project": {"name": 12345}}, "name"),
    ("projects", {"project": {"name": "MARK", "description": 7}}, "description"),
    ("projects", {"project": {"name": "MARK", "tags": "a,b"}}, "tags"),
    ("projects", {"project": "MARK"}, "project"),
    ("users", {"user": {"name": "MARK", "enabled": "yes"}}, "enabled"),
    ("users", {"user": {"name": "MARK", "password": 123}}, "password"),
    ("users", {"user": {"name": ["MARK"]}}, "name"),
    ("groups", {"group": {"name": {"x": "MARK"}}}, "name"),
    ("roles", {"role": {"name": None}}, "name"),
    ("domains", {"domain": {"name": "MARK", "enabled": "true"}}, "enabled"),
]


@pytest.mark.parametrize(
    "collection,body,field_name",
    WRONG_TYPES,
    ids=[f"{c}-{f}-{i}" for i, (c, _, f) in enumerate(WRONG_TYPES)],
)
def test_wrong_type_is_400_naming_the_field(api, uniq, collection, body, field_name):
    marker = f"type-{uniq}"
    body = json.loads(json.dumps(body).replace("MARK", marker))
    err = error_of(api.post(collection, body), 400)
    assert_message_names(err, field_name)
    assert_nothing_named(api, marker)


def test_wrong_type_on_update_changes_nothing(api, uniq):
    project = api.create("projects", "project", {"name": f"upd-{uniq}", "description": "before"})
    for body, field_name in (
        ({"project": {"enabled": "yes"}}, "enabled"),
        ({"project": {"name": 5}}, "name"),
        ({"project": {"name": "x" * 65}}, "name"),
        ({"project": {"description": "after", "enabled": "no"}}, "enabled"),
    ):
        err = error_of(api.patch(f"projects/{project['id']}", body), 400)
        assert_message_names(err, field_name)
    got = check(api.get(f"projects/{project['id']}"), 200).json()["project"]
    assert (got["name"], got["description"], got["enabled"]) == (f"upd-{uniq}", "before", True), got

    user = api.create("users", "user", {"name": f"updu-{uniq}", "password": "pw"})
    err = error_of(api.patch(f"users/{user['id']}", {"user": {"enabled": "false"}}), 400)
    assert_message_names(err, "enabled")
    assert check(api.get(f"users/{user['id']}"), 200).json()["user"]["enabled"] is True


# --------------------------------------------------------------------------
# Missing required fields
# --------------------------------------------------------------------------


MISSING = [
    ("projects", {}, "project"),
    ("projects", {"project": {}}, "name"),
    ("projects", {"project": {"description": "MARK"}}, "name"),
    ("users", {"user": {"password": "MARK"}}, "name"),
    ("users", {}, "user"),
    ("groups", {"group": {"description": "MARK"}}, "name"),
    ("roles", {"role": {}}, "name"),
    ("domains", {"domain": {"description": "MARK"}}, "name"),
    ("services", {"service": {"name": "MARK"}}, "type"),
    ("regions", {}, "region"),
]


@pytest.mark.parametrize(
    "collection,body,field_name",
    MISSING,
    ids=[f"{c}-{f}-{i}" for i, (c, _, f) in enumerate(MISSING)],
)
def test_missing_required_field_is_400_naming_it(api, uniq, collection, body, field_name):
    marker = f"miss-{uniq}"
    body = json.loads(json.dumps(body).replace("MARK", marker))
    err = error_of(api.post(collection, body), 400)
    assert_message_names(err, field_name)
    assert_nothing_named(api, marker)


def test_endpoint_missing_or_bad_fields_are_400(api, uniq):
    service = api.create("services", "service", {"type": f"t-{uniq}", "name": f"s-{uniq}"})
    url = f"http://127.0.0.1:9/{uniq}"
    cases = [
        ({"service_id": service["id"], "interface": "public"}, "url"),
        ({"service_id": service["id"], "url": url}, "interface"),
        ({"interface": "public", "url": url}, "service_id"),
        ({"service_id": service["id"], "interface": "sideways", "url": url}, "interface"),
    ]
    for attrs, field_name in cases:
        err = error_of(api.post("endpoints", {"endpoint": attrs}), 400)
        assert_message_names(err, field_name)
    r = check(api.get("endpoints", params={"service_id": service["id"]}), 200)
    assert r.json()["endpoints"] == [], r.json()
    check(api.delete(f"services/{service['id']}"), 204)


def test_application_credential_without_name_is_400(api):
    admin_id = api.user_id("admin")
    before = check(api.get(f"users/{admin_id}/application_credentials"), 200).json()
    err = error_of(api.post(f"users/{admin_id}/application_credentials", {"application_credential": {}}), 400)
    assert_message_names(err, "name")
    err = error_of(
        api.post(
            f"users/{admin_id}/application_credentials",
            {"application_credential": {"name": "x", "roles": "member"}},
        ),
        400,
    )
    assert_message_names(err, "roles")
    after = check(api.get(f"users/{admin_id}/application_credentials"), 200).json()
    assert len(after["application_credentials"]) == len(before["application_credentials"])


# --------------------------------------------------------------------------
# Unknown top-level fields (Keystone's create schemas forbid them)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(COLLECTIONS))
def test_unknown_top_level_field_is_400(api, uniq, key):
    marker = f"extra-{uniq}"
    body = {key: {"name": marker}, "bogus_field": True}
    err = error_of(api.post(COLLECTIONS[key], body), 400)
    assert_message_names(err, "bogus_field", "additional", "unexpected", "unknown")
    assert_nothing_named(api, marker)


# --------------------------------------------------------------------------
# The auth body
# --------------------------------------------------------------------------


AUTH_BAD = [
    ({}, 400, "auth"),
    ({"auth": {}}, 400, "identity"),
    ({"auth": {"identity": {}}}, 400, "methods"),
    ({"auth": {"identity": {"methods": "password"}}}, 400, "methods"),
    ({"auth": {"identity": {"methods": ["password"]}}}, 400, "password"),
    ({"auth": {"identity": {"methods": ["password"], "password": {"user": {"password": "x"}}}}}, 400, "name"),
    (
        {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "password": 5, "domain": {"id": "default"}}}}}},
        400,
        "password",
    ),
    (
        {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "password": "x", "domain": {}}}}}},
        400,
        "domain",
    ),
    ({"auth": {"identity": {"methods": ["token"], "token": {}}}}, 400, "id"),
    (
        {
            "auth": {
                "identity": {"methods": ["password"], "password": {"user": {"name": "admin", "password": "x", "domain": {"id": "default"}}}},
                "scope": {"project": {}},
            }
        },
        400,
        "project",
    ),
]


@pytest.mark.parametrize("body,status,words", AUTH_BAD, ids=[f"auth-{i}" for i in range(len(AUTH_BAD))])
def test_bad_auth_body_is_rejected_naming_the_problem(api, body, status, words):
    r = api.issue(body, expect=None)
    err = error_of(r, status)
    assert_message_names(err, *words.split("|"))
    assert "X-Subject-Token" not in r.headers


def test_unsupported_auth_method_is_401(api):
    r = api.issue({"auth": {"identity": {"methods": ["no-such-method"], "no-such-method": {}}}}, expect=None)
    error_of(r, 401)
    assert "X-Subject-Token" not in r.headers


# --------------------------------------------------------------------------
# Name lengths
# --------------------------------------------------------------------------


# (resource key, longest allowed name)
NAME_LIMITS = [("project", 64), ("domain", 64), ("user", 255), ("group", 64), ("role", 255)]


@pytest.mark.parametrize("key,limit", NAME_LIMITS, ids=[k for k, _ in NAME_LIMITS])
def test_name_length_limit(api, uniq, key, limit):
    collection = COLLECTIONS[key]
    prefix = f"len-{uniq}-"
    too_long = prefix + "x" * (limit + 1 - len(prefix))
    assert len(too_long) == limit + 1
    err = error_of(api.post(collection, {key: {"name": too_long}}), 400)
    assert_message_names(err, "name")
    for bad in ("", "   "):
        err = error_of(api.post(collection, {key: {"name": bad}}), 400)
        assert_message_names(err, "name")
    assert_nothing_named(api, prefix)

    longest = prefix + "y" * (limit - len(prefix))
    created = api.create(collection, key, {"name": longest})
    assert created["name"] == longest
    if key == "domain":
        check(api.patch(f"domains/{created['id']}", {"domain": {"enabled": False}}), 200)
    check(api.delete(f"{collection}/{created['id']}"), 204)


# --------------------------------------------------------------------------
# Oversized bodies
# --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["projects", "users", "auth/tokens"])
def test_oversized_body_is_refused(api, uniq, path):
    marker = f"huge-{uniq}"
    filler = "z" * (1024 * 1024 + 4096)
    if path == "auth/tokens":
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": "x"}}}}, "pad": filler}
    else:
        key = path[:-1]
        body = {key: {"name": marker, "description": filler}}
    data = json.dumps(body).encode()
    assert len(data) > 1024 * 1024
    r = post_raw(api, path, data)
    err = error_of(r, 413, 400)
    assert re.search(r"larg|size|limit|exceed|long|big", err["message"], re.I), err
    assert_nothing_named(api, marker)


# --------------------------------------------------------------------------
# Unknown ids: 404, never 500 (clients look names up this way)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "collection",
    ["projects", "users", "groups", "roles", "domains", "regions", "services", "endpoints"],
)
def test_unknown_id_or_name_is_404(api, collection):
    for ident in ("0123456789abcdef0123456789abcdef", "no-such-name"):
        error_of(api.get(f"{collection}/{ident}"), 404)
        error_of(api.delete(f"{collection}/{ident}"), 404)
    error_of(api.patch(f"{collection}/0123456789abcdef0123456789abcdef", {collection[:-1]: {"description": "x"}}), 404)
