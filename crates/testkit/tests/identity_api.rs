//! Identity v3 through a real socket: the user story, revocation, policy,
//! input validation, restart. Each test starts its own stack.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::{Client, Stack, ADMIN_PASSWORD};

const V3: &str = "/identity/v3";

/// Creates project demo, user alice (password s3cret) with member on demo.
async fn demo(c: &Client, admin: &str) -> (String, String) {
    let p = c
        .post(
            &format!("{V3}/projects"),
            admin,
            json!({"project": {"name": "demo"}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
    let pid = p.body["project"]["id"].as_str().unwrap().to_string();
    let u = c
        .post(
            &format!("{V3}/users"),
            admin,
            json!({"user": {"name": "alice", "password": "s3cret", "default_project_id": pid}}),
        )
        .await;
    assert_eq!(u.status, StatusCode::CREATED, "{}", u.body);
    let uid = u.body["user"]["id"].as_str().unwrap().to_string();
    let roles = c.get(&format!("{V3}/roles?name=member"), admin).await;
    let rid = roles.body["roles"][0]["id"].as_str().unwrap().to_string();
    let g = c
        .put(
            &format!("{V3}/projects/{pid}/users/{uid}/roles/{rid}"),
            admin,
        )
        .await;
    assert_eq!(g.status, StatusCode::NO_CONTENT);
    (pid, uid)
}

#[tokio::test]
async fn bootstrap_gives_admin_a_token_with_catalog_and_implied_roles() {
    let s = Stack::start().await;
    let c = s.client();
    let r = c
        .auth_password("admin", ADMIN_PASSWORD, Some("admin"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r
        .header("x-openstack-request-id")
        .unwrap()
        .starts_with("req-"));
    let t = &r.body["token"];
    let mut roles: Vec<&str> = t["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, ["admin", "member", "reader"]);
    assert_eq!(t["project"]["domain"]["id"], "default");
    assert_eq!(t["user"]["domain"]["name"], "Default");
    let exp = t["expires_at"].as_str().unwrap();
    assert!(
        exp.ends_with('Z') && exp.len() == "2026-11-21T18:00:00.000000Z".len(),
        "{exp}"
    );
    let cat = t["catalog"].as_array().unwrap();
    let ident = cat
        .iter()
        .find(|s| s["type"] == "identity")
        .expect("identity in catalog");
    let public = ident["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["interface"] == "public")
        .unwrap();
    assert_eq!(public["url"], format!("http://{}/identity", s.addr));
    assert_eq!(public["region_id"], "RegionOne");
    // Version discovery answers like Keystone.
    let v = c.call(Method::GET, "/identity", None, &[], None).await;
    assert_eq!(v.status, StatusCode::MULTIPLE_CHOICES);
    // 3.10: the newest minor version whose additions are all served (3.13
    // brought application-credential access rules, which are refused).
    assert_eq!(v.body["versions"]["values"][0]["id"], "v3.10");
    let v = c.call(Method::GET, "/identity/v3", None, &[], None).await;
    assert_eq!(v.body["version"]["status"], "stable");
}

#[tokio::test]
async fn a_member_sees_only_its_own_project_and_cannot_list_users() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let (pid, uid) = demo(&c, &admin).await;
    let alice = c.token("alice", "s3cret", "demo").await;
    assert_eq!(
        c.get(&format!("{V3}/users"), &alice).await.status,
        StatusCode::FORBIDDEN
    );
    let forbidden = c.get(&format!("{V3}/users"), &alice).await;
    assert_eq!(forbidden.body["error"]["code"], 403);
    assert!(forbidden.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("identity:list_users"));
    assert_eq!(
        c.get(&format!("{V3}/projects"), &alice).await.status,
        StatusCode::FORBIDDEN
    );
    let mine = c.get(&format!("{V3}/users/{uid}/projects"), &alice).await;
    assert_eq!(mine.status, StatusCode::OK);
    let names: Vec<&str> = mine.body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["demo"]);
    let auth_projects = c.get(&format!("{V3}/auth/projects"), &alice).await;
    assert_eq!(auth_projects.body["projects"].as_array().unwrap().len(), 1);
    assert_eq!(
        c.get(&format!("{V3}/projects/{pid}"), &alice).await.status,
        StatusCode::OK
    );
    let admin_project = c
        .get(&format!("{V3}/projects?name=admin"), &admin)
        .await
        .body["projects"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        c.get(&format!("{V3}/projects/{admin_project}"), &alice)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Alice may not grant herself admin.
    let admin_role = c.get(&format!("{V3}/roles?name=admin"), &admin).await.body["roles"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        c.put(
            &format!("{V3}/projects/{pid}/users/{uid}/roles/{admin_role}"),
            &alice
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn tokens_die_at_once_when_their_grounds_go() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let (pid, uid) = demo(&c, &admin).await;
    let member = c.get(&format!("{V3}/roles?name=member"), &admin).await.body["roles"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Password change by an admin.
    let t = c.token("alice", "s3cret", "demo").await;
    let rescoped = rescope(&c, &t, &pid).await;
    assert_eq!(c.validate(&admin, &rescoped).await, StatusCode::OK);
    assert_eq!(
        c.patch(
            &format!("{V3}/users/{uid}"),
            &admin,
            json!({"user": {"password": "n3w"}})
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(c.validate(&admin, &t).await, StatusCode::NOT_FOUND);
    assert_eq!(
        c.validate(&admin, &rescoped).await,
        StatusCode::NOT_FOUND,
        "rescoped token survives a password change"
    );
    assert_eq!(
        c.get(&format!("{V3}/auth/projects"), &t).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.auth_password("alice", "s3cret", Some("demo"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Disabled, then enabled again: the old token stays dead.
    let t = c.token("alice", "n3w", "demo").await;
    c.patch(
        &format!("{V3}/users/{uid}"),
        &admin,
        json!({"user": {"enabled": false}}),
    )
    .await;
    assert_eq!(c.validate(&admin, &t).await, StatusCode::NOT_FOUND);
    assert_eq!(
        c.auth_password("alice", "n3w", Some("demo")).await.status,
        StatusCode::UNAUTHORIZED
    );
    c.patch(
        &format!("{V3}/users/{uid}"),
        &admin,
        json!({"user": {"enabled": true}}),
    )
    .await;
    assert_eq!(c.validate(&admin, &t).await, StatusCode::NOT_FOUND);

    // Role removed.
    let t = c.token("alice", "n3w", "demo").await;
    assert_eq!(
        c.delete(
            &format!("{V3}/projects/{pid}/users/{uid}/roles/{member}"),
            &admin
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.validate(&admin, &t).await, StatusCode::NOT_FOUND);

    // Role through a group, then removed from the group.
    let g = c
        .post(
            &format!("{V3}/groups"),
            &admin,
            json!({"group": {"name": "devs"}}),
        )
        .await
        .body["group"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.put(&format!("{V3}/groups/{g}/users/{uid}"), &admin).await;
    c.put(
        &format!("{V3}/projects/{pid}/groups/{g}/roles/{member}"),
        &admin,
    )
    .await;
    let t = c.token("alice", "n3w", "demo").await;
    assert_eq!(
        c.delete(&format!("{V3}/groups/{g}/users/{uid}"), &admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.validate(&admin, &t).await, StatusCode::NOT_FOUND);

    // Project disabled; project deleted.
    c.put(&format!("{V3}/groups/{g}/users/{uid}"), &admin).await;
    let t = c.token("alice", "n3w", "demo").await;
    c.patch(
        &format!("{V3}/projects/{pid}"),
        &admin,
        json!({"project": {"enabled": false}}),
    )
    .await;
    assert_eq!(c.validate(&admin, &t).await, StatusCode::NOT_FOUND);
    c.patch(
        &format!("{V3}/projects/{pid}"),
        &admin,
        json!({"project": {"enabled": true}}),
    )
    .await;
    let t = c.token("alice", "n3w", "demo").await;
    assert_eq!(
        c.delete(&format!("{V3}/projects/{pid}"), &admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.validate(&admin, &t).await, StatusCode::NOT_FOUND);

    // User deleted.
    let t_admin2 = c.token("admin", ADMIN_PASSWORD, "admin").await;
    assert_eq!(
        c.delete(&format!("{V3}/users/{uid}"), &admin).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.validate(&admin, &t_admin2).await,
        StatusCode::OK,
        "other users' tokens are untouched"
    );

    // Explicit revocation of one token leaves the others.
    let a1 = c.admin_token().await;
    let a2 = c.admin_token().await;
    let r = c
        .call(
            Method::DELETE,
            &format!("{V3}/auth/tokens"),
            Some(&admin),
            &[("x-subject-token", &a1)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(c.validate(&admin, &a1).await, StatusCode::NOT_FOUND);
    assert_eq!(c.validate(&admin, &a2).await, StatusCode::OK);
}

async fn rescope(c: &Client, token: &str, pid: &str) -> String {
    let r = c
        .call(
            Method::POST,
            &format!("{V3}/auth/tokens"),
            None,
            &[],
            Some(json!({"auth": {"identity": {"methods": ["token"], "token": {"id": token}}, "scope": {"project": {"id": pid}}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.header("x-subject-token").unwrap()
}

#[tokio::test]
async fn a_token_from_a_token_keeps_the_original_expiry() {
    let s = Stack::start().await;
    let c = s.client();
    let first = c
        .auth_password("admin", ADMIN_PASSWORD, Some("admin"))
        .await;
    let tok = first.header("x-subject-token").unwrap();
    let pid = first.body["token"]["project"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = rescope(&c, &tok, &pid).await;
    let v = c
        .call(
            Method::GET,
            &format!("{V3}/auth/tokens"),
            Some(&tok),
            &[("x-subject-token", &second)],
            None,
        )
        .await;
    assert_eq!(
        v.body["token"]["expires_at"],
        first.body["token"]["expires_at"]
    );
    assert_eq!(
        v.body["token"]["audit_ids"][1], first.body["token"]["audit_ids"][0],
        "the audit chain links the two"
    );
    let methods: Vec<&str> = v.body["token"]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(methods, ["password", "token"]);
}

#[tokio::test]
async fn tampered_tokens_and_forged_identity_headers_get_nothing() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    demo(&c, &admin).await;
    let alice = c.token("alice", "s3cret", "demo").await;
    for pos in [0, 10, alice.len() / 2, alice.len() - 1] {
        let mut b = alice.clone().into_bytes();
        b[pos] = if b[pos] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(b).unwrap();
        assert_eq!(
            c.get(&format!("{V3}/auth/projects"), &bad).await.status,
            StatusCode::UNAUTHORIZED,
            "flip at {pos}"
        );
    }
    let forged = [
        ("x-roles", "admin"),
        ("x-user-id", "someone"),
        ("x-project-id", "admin"),
        ("x-identity-status", "Confirmed"),
        ("x-service-token", "whatever"),
        ("x-is-admin-project", "True"),
    ];
    let r = c
        .call(
            Method::GET,
            &format!("{V3}/users"),
            Some(&alice),
            &forged,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = c
        .call(Method::GET, &format!("{V3}/users"), None, &forged, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"]["title"], "Unauthorized");
}

#[tokio::test]
async fn huge_passwords_are_refused_before_hashing() {
    let s = Stack::start_with(|st| st.password_hash_rounds = 12).await;
    let c = s.client();
    let admin = c.admin_token().await;
    let huge = "p".repeat(1 << 20);
    // 1 MiB is over the body limit: refused before it is parsed, and the
    // client gets the answer (not a reset connection) every time.
    for _ in 0..10 {
        let r = c.auth_password("admin", &huge, Some("admin")).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large"));
    }
    // "Refused before hashing", measured against the machine itself rather
    // than a fixed bound: one real bcrypt at cost 12 (a wrong password) must
    // take longer than refusing a 4097-byte password.
    let started = std::time::Instant::now();
    let wrong = c
        .auth_password("admin", "not-the-password", Some("admin"))
        .await;
    let one_bcrypt = started.elapsed();
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let started = std::time::Instant::now();
    let r = c
        .auth_password("admin", &"p".repeat(4097), Some("admin"))
        .await;
    let refused = started.elapsed();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("4096"));
    assert!(
        refused < one_bcrypt,
        "refusing took {refused:?}, one bcrypt {one_bcrypt:?}: was it hashed?"
    );
    let r = c
        .post(
            &format!("{V3}/users"),
            &admin,
            json!({"user": {"name": "big", "password": "p".repeat(4097)}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        c.get(&format!("{V3}/users?name=big"), &admin).await.body["users"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn lockout_answers_like_an_unknown_user() {
    let s = Stack::start_with(|st| {
        st.lockout_failure_attempts = Some(3);
        st.lockout_duration = 2;
    })
    .await;
    let c = s.client();
    let admin = c.admin_token().await;
    demo(&c, &admin).await;
    for _ in 0..3 {
        assert_eq!(
            c.auth_password("alice", "wrong", Some("demo")).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = c.auth_password("alice", "s3cret", Some("demo")).await;
    let unknown = c.auth_password("nobody", "s3cret", Some("demo")).await;
    assert_eq!(locked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(locked.body, unknown.body);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        c.auth_password("alice", "s3cret", Some("demo"))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn duplicates_conflict_and_bad_input_writes_nothing() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    demo(&c, &admin).await;
    let dup = c
        .post(
            &format!("{V3}/projects"),
            &admin,
            json!({"project": {"name": "demo"}}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.body["error"]["code"], 409);
    assert_eq!(
        c.post(
            &format!("{V3}/users"),
            &admin,
            json!({"user": {"name": "alice"}})
        )
        .await
        .status,
        StatusCode::CONFLICT
    );
    let cases: Vec<(Value, &str)> = vec![
        (Value::String("{not json".into()), "Malformed"),
        (
            json!({"project": {"name": "x", "enabled": "yes"}}),
            "enabled",
        ),
        (json!({"project": {"name": 42}}), "name"),
        (json!({"project": {}}), "name"),
        (json!({"project": {"name": "a\nb"}}), "control"),
        (json!({"project": {"name": "x".repeat(65)}}), "64"),
        (json!({"project": {"name": "x", "tags": ["a/b"]}}), "tag"),
        (json!({"projekt": {"name": "x"}}), "project"),
        (json!([1, 2]), "object"),
        (
            json!({"project": {"name": "x"}, "bogus_field": true}),
            "bogus_field",
        ),
    ];
    for (body, needle) in cases {
        let r = c
            .post(&format!("{V3}/projects"), &admin, body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{body}: message {msg:?} does not name {needle:?}"
        );
    }
    let r = c
        .post(
            &format!("{V3}/users/x/password"),
            &admin,
            json!({"user": {"original_password": "a", "password": "b", "extra": 1}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let big = json!({"project": {"name": "big", "description": "d".repeat(200_000)}});
    assert_eq!(
        c.post(&format!("{V3}/projects"), &admin, big).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let names: Vec<String> = c.get(&format!("{V3}/projects"), &admin).await.body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["admin", "demo"]);
}

#[tokio::test]
async fn application_credentials_authenticate_with_a_subset_of_roles() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let (pid, uid) = demo(&c, &admin).await;
    let alice = c.token("alice", "s3cret", "demo").await;
    let r = c
        .post(
            &format!("{V3}/users/{uid}/application_credentials"),
            &alice,
            json!({"application_credential": {"name": "ci", "roles": [{"name": "reader"}]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["application_credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = r.body["application_credential"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(r.body["application_credential"]["project_id"], pid.as_str());
    // Asking for a role alice does not have is refused.
    let r = c
        .post(
            &format!("{V3}/users/{uid}/application_credentials"),
            &alice,
            json!({"application_credential": {"name": "x", "roles": [{"name": "admin"}]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let auth = json!({"auth": {"identity": {"methods": ["application_credential"],
        "application_credential": {"id": id, "secret": secret}}}});
    let r = c
        .call(
            Method::POST,
            &format!("{V3}/auth/tokens"),
            None,
            &[],
            Some(auth.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let roles: Vec<&str> = r.body["token"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["reader"]);
    assert_eq!(
        r.body["token"]["application_credential"]["restricted"],
        true
    );
    let ac_token = r.header("x-subject-token").unwrap();
    // A restricted credential cannot mint another one, nor be rescoped.
    let r = c
        .post(
            &format!("{V3}/users/{uid}/application_credentials"),
            &ac_token,
            json!({"application_credential": {"name": "y"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let wrong = json!({"auth": {"identity": {"methods": ["application_credential"],
        "application_credential": {"id": id, "secret": "nope"}}}});
    assert_eq!(
        c.call(
            Method::POST,
            &format!("{V3}/auth/tokens"),
            None,
            &[],
            Some(wrong)
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    // Deleting it kills its tokens.
    assert_eq!(
        c.delete(
            &format!("{V3}/users/{uid}/application_credentials/{id}"),
            &alice
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.validate(&admin, &ac_token).await, StatusCode::NOT_FOUND);
    assert_eq!(
        c.call(
            Method::POST,
            &format!("{V3}/auth/tokens"),
            None,
            &[],
            Some(auth)
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_restart_keeps_users_tokens_and_keys() {
    let mut s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    demo(&c, &admin).await;
    let alice = c.token("alice", "s3cret", "demo").await;
    s.restart().await;
    let c = s.client();
    assert_eq!(c.validate(&admin, &alice).await, StatusCode::OK);
    assert_eq!(
        c.get(&format!("{V3}/users?name=alice"), &admin).await.body["users"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        c.auth_password("alice", "s3cret", Some("demo"))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn role_assignments_effective_expands_groups_and_implied_roles() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let (pid, uid) = demo(&c, &admin).await;
    let r = c
        .get(
            &format!("{V3}/role_assignments?effective&include_names&user.id={uid}"),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut rows: Vec<(String, String)> = r.body["role_assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["role"]["name"].as_str().unwrap().to_string(),
                a["scope"]["project"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("member".to_string(), "demo".to_string()),
            ("reader".to_string(), "demo".to_string())
        ]
    );
    let raw = c
        .get(
            &format!("{V3}/role_assignments?scope.project.id={pid}"),
            &admin,
        )
        .await;
    assert_eq!(
        raw.body["role_assignments"].as_array().unwrap().len(),
        1,
        "without effective, implied roles are not listed"
    );
}

/// Every route, with an admin token, junk ids and junk bodies: never a 5xx.
#[tokio::test]
async fn no_route_answers_500_to_junk() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let paths = [
        "/auth/tokens",
        "/auth/catalog",
        "/auth/projects",
        "/auth/domains",
        "/auth/system",
        "/domains",
        "/domains/x",
        "/projects",
        "/projects/x",
        "/projects/x/tags",
        "/projects/x/tags/t",
        "/users",
        "/users/x",
        "/users/x/password",
        "/users/x/groups",
        "/users/x/projects",
        "/users/x/application_credentials",
        "/users/x/application_credentials/y",
        "/groups",
        "/groups/x",
        "/groups/x/users",
        "/groups/x/users/y",
        "/roles",
        "/roles/x",
        "/roles/x/implies",
        "/roles/x/implies/y",
        "/role_inferences",
        "/role_assignments",
        "/projects/x/users/y/roles",
        "/projects/x/users/y/roles/z",
        "/domains/x/groups/y/roles/z",
        "/system/users/x/roles",
        "/system/users/x/roles/y",
        "/regions",
        "/regions/x",
        "/services",
        "/services/x",
        "/endpoints",
        "/endpoints/x",
        "/nope",
    ];
    let bodies = [
        Value::String("".into()),
        Value::String("{".into()),
        json!(null),
        json!({}),
        json!({"project": null, "user": [], "auth": {"identity": 7}}),
        json!({"domain": {"name": {"deep": true}}, "region": {"id": "../../etc"}}),
    ];
    for p in paths {
        for m in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
        ] {
            for b in &bodies {
                let r = c
                    .call(
                        m.clone(),
                        &format!("{V3}{p}?limit=-1&marker=%00&enabled=maybe"),
                        Some(&admin),
                        &[("x-subject-token", "junk")],
                        Some(b.clone()),
                    )
                    .await;
                assert!(
                    !r.status.is_server_error(),
                    "{m} {p} {b}: {} {}",
                    r.status,
                    r.body
                );
                if r.status.is_client_error() && m != Method::HEAD {
                    assert!(
                        r.body["error"]["message"].is_string(),
                        "{m} {p}: error body {}",
                        r.body
                    );
                }
            }
        }
    }
}

/// Checklist item 7: two controllers share the database; B holds a copy of
/// A's key repository. After A rotates (its staged key becomes primary), a
/// token A issues validates on B, which holds that key only as staged.
#[tokio::test]
async fn keys_rotated_on_one_controller_validate_on_another() {
    let a = Stack::start().await;
    let data = a.settings.data_dir.clone();
    let a_keys = data.join("fernet-keys");
    let b_keys = a.dir.path().join("b-keys");
    std::fs::create_dir_all(&b_keys).unwrap();
    for e in std::fs::read_dir(&a_keys).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), b_keys.join(e.file_name())).unwrap();
    }
    let b = Stack::start_with(|s| {
        s.data_dir = data.clone();
        s.key_repository = Some(b_keys.clone());
    })
    .await;
    let (ca, cb) = (a.client(), b.client());
    let before = ca.admin_token().await;
    fernet::KeyRepository::new(&a_keys).rotate(3).unwrap();
    // A notices the rotation within a second.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let after = ca.admin_token().await;
    let admin_b = cb.admin_token().await;
    assert_eq!(
        cb.validate(&admin_b, &after).await,
        StatusCode::OK,
        "new primary of A is B's staged key"
    );
    assert_eq!(
        cb.validate(&admin_b, &before).await,
        StatusCode::OK,
        "old primary is on both"
    );
    assert_eq!(
        ca.validate(&after, &admin_b).await,
        StatusCode::OK,
        "B's primary is A's secondary"
    );
    // Writes on one controller reach the other within the watch interval.
    let p = ca
        .post(
            &format!("{V3}/projects"),
            &after,
            json!({"project": {"name": "shared"}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED);
    let pid = p.body["project"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        cb.get(&format!("{V3}/projects/{pid}"), &admin_b)
            .await
            .status,
        StatusCode::OK
    );
    let revoke = ca
        .call(
            Method::DELETE,
            &format!("{V3}/auth/tokens"),
            Some(&after),
            &[("x-subject-token", &admin_b)],
            None,
        )
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        cb.validate(&after, &admin_b).await,
        StatusCode::NOT_FOUND,
        "revocation on A reaches B"
    );
}

/// The CLI sends `"roles": []` with `--expiration`: that means "the roles of
/// my token", not "no roles".
#[tokio::test]
async fn an_empty_role_list_means_the_tokens_roles() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let (_, uid) = demo(&c, &admin).await;
    let alice = c.token("alice", "s3cret", "demo").await;
    let r = c
        .post(
            &format!("{V3}/users/{uid}/application_credentials"),
            &alice,
            json!({"application_credential": {"name": "x", "roles": [], "expires_at": "2099-12-21T19:36:18", "secret": null, "description": null, "access_rules": []}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let mut roles: Vec<&str> = r.body["application_credential"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, ["member", "reader"]);
    // Keystone answers the expiry as stored: naive UTC with microseconds,
    // no zone added.
    let acid = r.body["application_credential"]["id"].as_str().unwrap();
    assert_eq!(
        r.body["application_credential"]["expires_at"],
        "2099-12-21T19:36:18.000000"
    );
    let g = c
        .get(
            &format!("{V3}/users/{uid}/application_credentials/{acid}"),
            &alice,
        )
        .await;
    assert_eq!(
        g.body["application_credential"]["expires_at"],
        "2099-12-21T19:36:18.000000"
    );
}

/// Identity and network writes share one SQLite database: concurrent writes
/// of both must all succeed (no SQLITE_BUSY turned into a 500).
#[tokio::test]
async fn concurrent_identity_and_network_writes_never_fail() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (c, admin) = (c.clone(), admin.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let p = c
                .post(
                    &format!("{V3}/projects"),
                    &admin,
                    json!({"project": {"name": format!("p{i}"), "tags": ["a", "b"]}}),
                )
                .await;
            statuses.push(p.status);
            let pid = p.body["project"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            statuses.push(
                c.patch(
                    &format!("{V3}/projects/{pid}"),
                    &admin,
                    json!({"project": {"enabled": false}}),
                )
                .await
                .status,
            );
            statuses.push(
                c.delete(&format!("{V3}/projects/{pid}"), &admin)
                    .await
                    .status,
            );
            let n = c
                .post(
                    "/network/v2.0/networks",
                    &admin,
                    json!({"network": {"name": format!("n{i}")}}),
                )
                .await;
            statuses.push(n.status);
            statuses
        }));
    }
    for t in tasks {
        for st in t.await.unwrap() {
            assert!(st.is_success(), "a concurrent write failed with {st}");
        }
    }
}

fn message(r: &testkit::Resp) -> &str {
    r.body["error"]["message"].as_str().unwrap_or_default()
}

/// Keystone creates a region named only by the v2-era `region` attribute of
/// an endpoint; `region_id` or `service_id` naming nothing is a 400.
#[tokio::test]
async fn an_endpoint_with_a_legacy_region_creates_the_region() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let svc = c
        .post(
            &format!("{V3}/services"),
            &admin,
            json!({"service": {"type": "legacy", "name": "legacy"}}),
        )
        .await;
    assert_eq!(svc.status, StatusCode::CREATED, "{}", svc.body);
    let sid = svc.body["service"]["id"].as_str().unwrap();
    let ep = |extra: Value| {
        let mut e =
            json!({"service_id": sid, "interface": "public", "url": "http://legacy.example:8080/"});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "endpoint": e })
    };
    let r = c
        .post(
            &format!("{V3}/endpoints"),
            &admin,
            ep(json!({"region": "OldOne"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["endpoint"]["region_id"], "OldOne");
    assert_eq!(r.body["endpoint"]["region"], "OldOne");
    let eid = r.body["endpoint"]["id"].as_str().unwrap().to_string();
    let reg = c.get(&format!("{V3}/regions/OldOne"), &admin).await;
    assert_eq!(reg.status, StatusCode::OK, "{}", reg.body);
    // Again with the region now there: used as it is.
    let r = c
        .post(
            &format!("{V3}/endpoints"),
            &admin,
            ep(json!({"region": "OldOne", "interface": "internal"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // An update may name a new region the same way.
    let r = c
        .patch(
            &format!("{V3}/endpoints/{eid}"),
            &admin,
            json!({"endpoint": {"region": "OlderOne"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["endpoint"]["region_id"], "OlderOne");
    let reg = c.get(&format!("{V3}/regions/OlderOne"), &admin).await;
    assert_eq!(reg.status, StatusCode::OK, "{}", reg.body);
    // `region_id` must name an existing region, `service_id` a service.
    let r = c
        .post(
            &format!("{V3}/endpoints"),
            &admin,
            ep(json!({"region_id": "NoSuch"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        message(&r).starts_with("Expecting to find endpoint region_id in region table."),
        "{}",
        r.body
    );
    let r = c
        .post(
            &format!("{V3}/endpoints"),
            &admin,
            ep(json!({"service_id": "nosuchservice"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        message(&r).starts_with("Expecting to find endpoint service_id in service table."),
        "{}",
        r.body
    );
    assert_eq!(
        c.get(&format!("{V3}/regions/NoSuch"), &admin).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Clients send back what they read: an update body holding the entity's own
/// id is fine; only a different id is refused ("Cannot change ID").
#[tokio::test]
async fn an_update_may_repeat_its_own_id_but_not_change_it() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let (pid, uid) = demo(&c, &admin).await;
    let r = c
        .patch(
            &format!("{V3}/users/{uid}"),
            &admin,
            json!({"user": {"id": uid, "email": "alice@example.org"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["user"]["id"], uid.as_str());
    assert_eq!(r.body["user"]["email"], "alice@example.org");
    let r = c
        .patch(
            &format!("{V3}/users/{uid}"),
            &admin,
            json!({"user": {"id": "someoneelse", "email": "x@example.org"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(message(&r), "Cannot change ID");
    let u = c.get(&format!("{V3}/users/{uid}"), &admin).await;
    assert_eq!(u.body["user"]["email"], "alice@example.org");
    // The same for the other resources that take an update.
    let r = c
        .patch(
            &format!("{V3}/projects/{pid}"),
            &admin,
            json!({"project": {"id": pid, "description": "same id"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = c
        .patch(
            &format!("{V3}/projects/{pid}"),
            &admin,
            json!({"project": {"id": "other", "description": "other id"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

/// Keystone: "Global role cannot imply a domain-specific role", answered as
/// `InvalidImpliedRole` (403).
#[tokio::test]
async fn a_global_role_cannot_imply_a_domain_specific_role() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let dr = c
        .post(
            &format!("{V3}/roles"),
            &admin,
            json!({"role": {"name": "dom-role", "domain_id": "default"}}),
        )
        .await;
    assert_eq!(dr.status, StatusCode::CREATED, "{}", dr.body);
    let dom_role = dr.body["role"]["id"].as_str().unwrap().to_string();
    let roles = c.get(&format!("{V3}/roles?name=member"), &admin).await;
    let member = roles.body["roles"][0]["id"].as_str().unwrap().to_string();
    let r = c
        .put(&format!("{V3}/roles/{member}/implies/{dom_role}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(
        message(&r),
        format!("{dom_role} cannot be an implied roles.")
    );
    let r = c
        .call(
            Method::HEAD,
            &format!("{V3}/roles/{member}/implies/{dom_role}"),
            Some(&admin),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The other way round is what domain-specific roles are for.
    let r = c
        .put(&format!("{V3}/roles/{dom_role}/implies/{member}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

/// A domain-specific role stands only for the roles it implies: effective
/// role assignments (and tokens) list those, not the domain role itself.
#[tokio::test]
async fn effective_assignments_leave_out_domain_specific_roles() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let p = c
        .post(
            &format!("{V3}/projects"),
            &admin,
            json!({"project": {"name": "dsr"}}),
        )
        .await;
    let pid = p.body["project"]["id"].as_str().unwrap().to_string();
    let u = c
        .post(
            &format!("{V3}/users"),
            &admin,
            json!({"user": {"name": "dsr-user", "password": "pw-dsr"}}),
        )
        .await;
    let uid = u.body["user"]["id"].as_str().unwrap().to_string();
    let dr = c
        .post(
            &format!("{V3}/roles"),
            &admin,
            json!({"role": {"name": "dom-reader", "domain_id": "default"}}),
        )
        .await;
    let dom_role = dr.body["role"]["id"].as_str().unwrap().to_string();
    let roles = c.get(&format!("{V3}/roles?name=reader"), &admin).await;
    let reader = roles.body["roles"][0]["id"].as_str().unwrap().to_string();
    let r = c
        .put(&format!("{V3}/roles/{dom_role}/implies/{reader}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let g = c
        .put(
            &format!("{V3}/projects/{pid}/users/{uid}/roles/{dom_role}"),
            &admin,
        )
        .await;
    assert_eq!(g.status, StatusCode::NO_CONTENT);
    let role_ids = |r: &testkit::Resp| -> Vec<String> {
        r.body["role_assignments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["role"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    let direct = c
        .get(&format!("{V3}/role_assignments?user.id={uid}"), &admin)
        .await;
    assert_eq!(role_ids(&direct), [dom_role.as_str()], "{}", direct.body);
    let eff = c
        .get(
            &format!("{V3}/role_assignments?user.id={uid}&effective"),
            &admin,
        )
        .await;
    assert_eq!(eff.status, StatusCode::OK, "{}", eff.body);
    assert_eq!(role_ids(&eff), [reader.as_str()], "{}", eff.body);
    assert_eq!(
        eff.body["role_assignments"][0]["links"]["prior_role"]
            .as_str()
            .map(|l| l.ends_with(&format!("/roles/{dom_role}"))),
        Some(true),
        "{}",
        eff.body
    );
    // The token holds the implied role only.
    let t = c.auth_password("dsr-user", "pw-dsr", Some("dsr")).await;
    assert_eq!(t.status, StatusCode::CREATED, "{}", t.body);
    let names: Vec<&str> = t.body["token"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["reader"]);
}

async fn self_service(c: &Client, uid: &str, original: &str, new: &str) -> testkit::Resp {
    c.call(
        Method::POST,
        &format!("{V3}/users/{uid}/password"),
        None,
        &[],
        Some(json!({"user": {"original_password": original, "password": new}})),
    )
    .await
}

/// `[security_compliance] unique_last_password_count = 3`: a user changing
/// their own password may not reuse any of their last three (the current one
/// included); an administrator's reset is not held to it, as in Keystone.
#[tokio::test]
async fn a_self_service_change_may_not_reuse_recent_passwords() {
    let s = Stack::start_with(|st| st.unique_last_password_count = 3).await;
    let c = s.client();
    let admin = c.admin_token().await;
    let (_, uid) = demo(&c, &admin).await;
    let refused = "The new password cannot be identical to a previous password. The total number which includes the new password must be unique is 3.";
    let r = self_service(&c, &uid, "s3cret", "s3cret").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(message(&r), refused);
    assert_eq!(
        self_service(&c, &uid, "s3cret", "pw-one").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        self_service(&c, &uid, "pw-one", "pw-two").await.status,
        StatusCode::NO_CONTENT
    );
    for old in ["s3cret", "pw-one", "pw-two"] {
        let r = self_service(&c, &uid, "pw-two", old).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{old}: {}", r.body);
        assert_eq!(message(&r), refused);
    }
    // Nothing was changed by the refusals.
    c.token("alice", "pw-two", "demo").await;
    assert_eq!(
        self_service(&c, &uid, "pw-two", "pw-three").await.status,
        StatusCode::NO_CONTENT
    );
    // Now s3cret is the fourth last: allowed again.
    assert_eq!(
        self_service(&c, &uid, "pw-three", "s3cret").await.status,
        StatusCode::NO_CONTENT
    );
    c.token("alice", "s3cret", "demo").await;
    // An administrator may set a recent password.
    let r = c
        .patch(
            &format!("{V3}/users/{uid}"),
            &admin,
            json!({"user": {"password": "pw-three"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    c.token("alice", "pw-three", "demo").await;
    // The admin's reset counts in the history too.
    let r = self_service(&c, &uid, "pw-three", "s3cret").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

/// With the default (0) the history is off: the same password may be set
/// again.
#[tokio::test]
async fn without_a_password_history_a_password_may_be_reused() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let (_, uid) = demo(&c, &admin).await;
    assert_eq!(
        self_service(&c, &uid, "s3cret", "s3cret").await.status,
        StatusCode::NO_CONTENT
    );
    c.token("alice", "s3cret", "demo").await;
}

/// `[security_compliance] minimum_password_age = 1`: a password the user set
/// must be kept a day; one an administrator set may be changed at once.
#[tokio::test]
async fn a_self_service_password_must_reach_the_minimum_age() {
    let s = Stack::start_with(|st| st.minimum_password_age = 1).await;
    let c = s.client();
    let admin = c.admin_token().await;
    let (_, uid) = demo(&c, &admin).await;
    assert_eq!(
        self_service(&c, &uid, "s3cret", "pw-one").await.status,
        StatusCode::NO_CONTENT
    );
    let r = self_service(&c, &uid, "pw-one", "pw-two").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        message(&r),
        "You cannot change your password at this time due to the minimum password age. Once you change your password, it must be used for 1 day(s) before it can be changed. Please try again in 0 day(s) or contact your administrator to reset your password."
    );
    c.token("alice", "pw-one", "demo").await;
}

/// Roles have one option upstream, `immutable` (a boolean): anything else is
/// a 400. An immutable role can be neither changed nor deleted until a body
/// holding only `immutable: false` unlocks it.
#[tokio::test]
async fn role_options_are_keystones_and_immutable_holds() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    for opts in [json!({"colour": true}), json!({"immutable": "yes"})] {
        let r = c
            .post(
                &format!("{V3}/roles"),
                &admin,
                json!({"role": {"name": "opt-role", "options": opts}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{opts}: {}", r.body);
    }
    let listed = c.get(&format!("{V3}/roles?name=opt-role"), &admin).await;
    assert_eq!(listed.body["roles"], json!([]));
    let r = c
        .post(
            &format!("{V3}/roles"),
            &admin,
            json!({"role": {"name": "opt-role", "options": {"immutable": true}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["role"]["options"], json!({"immutable": true}));
    let rid = r.body["role"]["id"].as_str().unwrap().to_string();
    let r = c
        .patch(
            &format!("{V3}/roles/{rid}"),
            &admin,
            json!({"role": {"options": {"bogus": 1}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = c
        .patch(
            &format!("{V3}/roles/{rid}"),
            &admin,
            json!({"role": {"description": "changed"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = c.delete(&format!("{V3}/roles/{rid}"), &admin).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = c
        .patch(
            &format!("{V3}/roles/{rid}"),
            &admin,
            json!({"role": {"options": {"immutable": false}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["role"]["options"], json!({"immutable": false}));
    let r = c.delete(&format!("{V3}/roles/{rid}"), &admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
}

/// A restart with another `--admin-password` gives the admin that password
/// (as `keystone-manage bootstrap` does) and ends the old password's tokens;
/// clouds.yaml holds the password that works.
#[tokio::test]
async fn a_restart_with_another_admin_password_resets_it() {
    let mut s = Stack::start().await;
    let c = s.client();
    let old_token = c.admin_token().await;
    s.settings.admin_password = Some("a-new-admin-password".into());
    s.restart().await;
    let c = s.client();
    let clouds = std::fs::read_to_string(s.data_dir().join("clouds.yaml")).unwrap();
    assert!(
        clouds.contains("password: \"a-new-admin-password\""),
        "{clouds}"
    );
    let new_token = c.token("admin", "a-new-admin-password", "admin").await;
    let r = c
        .auth_password("admin", ADMIN_PASSWORD, Some("admin"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        c.validate(&new_token, &old_token).await,
        StatusCode::NOT_FOUND
    );
    // The same password again changes nothing.
    s.restart().await;
    let c = s.client();
    assert_eq!(c.validate(&new_token, &new_token).await, StatusCode::OK);
}
