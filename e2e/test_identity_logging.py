"""Secrets never reach the server's log, even at debug level: passwords,
tokens, application-credential secrets (brief: "Secrets never reach logs")."""

from harness import check


def test_secrets_never_reach_the_log_at_debug_level(server_factory, monkeypatch):
    monkeypatch.setenv("RUST_LOG", "debug")
    srv = server_factory()
    api = srv.api
    user_pw = "Log-Secret-Passw0rd-1"
    new_pw = "Log-Secret-Passw0rd-2"
    admin = api.admin_token
    proj = api.create("projects", "project", {"name": "logs"})
    user = api.create("users", "user", {"name": "logger", "password": user_pw, "default_project_id": proj["id"]})
    check(api.put(f"projects/{proj['id']}/users/{user['id']}/roles/{api.role_id('member')}"), 204)
    tok, _ = api.password_token("logger", user_pw, project="logs")
    check(api.validate(tok), 200)
    # A failed login carries a secret too.
    api.issue({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "logger", "domain": {"id": "default"}, "password": "Wrong-Secret-Guess-9"}}}}}, expect=401)
    ac = check(api.post(f"users/{user['id']}/application_credentials",
                        {"application_credential": {"name": "logcred"}}, token=tok), 201).json()["application_credential"]
    ac_tok = api.issue({"auth": {"identity": {"methods": ["application_credential"], "application_credential": {
        "id": ac["id"], "secret": ac["secret"]}}}}).headers["X-Subject-Token"]
    check(api.post(f"users/{user['id']}/password",
                   {"user": {"original_password": user_pw, "password": new_pw}}, token=None), 204)
    check(api.request("DELETE", "auth/tokens", headers={"X-Subject-Token": ac_tok}), 204, 404)
    srv.stop()
    # The harness writes its own "===== start #N: <argv>" lines (with the
    # --admin-password argument) into the same file: those are not the server's.
    log = "\n".join(
        line for line in srv.log_path.read_text(errors="replace").splitlines() if not line.startswith("===== start")
    )
    assert "request" in log, "the server logged no requests at all: the test would prove nothing"
    for name, secret in [
        ("admin password", srv.admin_password),
        ("user password", user_pw),
        ("new password", new_pw),
        ("wrong password", "Wrong-Secret-Guess-9"),
        ("admin token", admin),
        ("user token", tok),
        ("application credential secret", ac["secret"]),
        ("application credential token", ac_tok),
    ]:
        assert secret not in log, f"the {name} appears in the server log"
