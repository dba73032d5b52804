//! Operator policy overrides through a real socket: per-service files in
//! `DATA_DIR/policy/` and given with `--policy-file SERVICE=PATH` change
//! what callers may do, and a bad file stops the start with a message that
//! names the rule and the file.

use std::path::Path;

use hyper::StatusCode;
use serde_json::json;
use testkit::{Settings, Stack};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("policy dir");
    std::fs::write(path, text).expect("policy file");
}

#[tokio::test]
async fn overrides_take_effect_through_the_api() {
    let stack = Stack::start_with(|s| {
        let dir = s.data_dir.join("policy");
        // Networks become admin-only (the default lets a member create one).
        write(
            &dir.join("network.yaml"),
            "# only admins create networks here\n\"create_network\": \"rule:admin_only\"\n",
        );
        // Identity in JSON, which is YAML too: regions are admin-only.
        write(
            &dir.join("identity.json"),
            r#"{"identity:list_regions": "rule:admin_required"}"#,
        );
        // Image given explicitly: members may publish (the default: admin only).
        let image = s.data_dir.with_file_name("image-policy.yaml");
        write(&image, "publicize_image: 'role:member'\n");
        s.policy_files.push(("image".into(), image));
    })
    .await;
    let c = stack.client();
    let admin = c.admin_token().await;
    c.project_user(&admin, "demo", "alice", "alice-pw", "member")
        .await;
    let alice = c.token("alice", "alice-pw", "demo").await;

    let net = json!({"network": {"name": "n1"}});
    let r = c.post("/network/v2.0/networks", &alice, net.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(
        r.body["NeutronError"]["type"], "PolicyNotAuthorized",
        "{}",
        r.body
    );
    let r = c.post("/network/v2.0/networks", &admin, net).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Rules the file does not name keep their defaults.
    let r = c.get("/network/v2.0/networks", &alice).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let r = c.get("/identity/v3/regions", &alice).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["error"]["code"], 403, "{}", r.body);
    let r = c.get("/identity/v3/regions", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let img = json!({"name": "pub", "visibility": "public",
                     "disk_format": "raw", "container_format": "bare"});
    let r = c.post("/image/v2/images", &alice, img).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["visibility"], "public", "{}", r.body);
}

/// Tag writes and reads check Neutron's tagging-controller rules
/// (`<action>_<resource>:tags`), not `update_<resource>`; the pre-2025.1
/// names (`create_networks_tags`, ...) still override them, as oslo.policy's
/// deprecated rules do.
#[tokio::test]
async fn tag_rules_are_neutrons_and_overridable() {
    let stack = Stack::start_with(|s| {
        write(
            &s.data_dir.join("policy/network.yaml"),
            concat!(
                "create_networks_tags: rule:admin_only\n",
                "delete_network:tags: rule:admin_only\n",
                "get_networks_tags: rule:admin_only\n",
                "update_network: rule:admin_only\n",
            ),
        );
    })
    .await;
    let c = stack.client();
    let admin = c.admin_token().await;
    c.project_user(&admin, "demo", "alice", "alice-pw", "member")
        .await;
    let alice = c.token("alice", "alice-pw", "demo").await;
    let r = c
        .post(
            "/network/v2.0/networks",
            &alice,
            json!({"network": {"name": "n"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let tags = format!(
        "/network/v2.0/networks/{}/tags",
        r.body["network"]["id"].as_str().expect("id")
    );
    let refused = |r: testkit::Resp| {
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert_eq!(
            r.body["NeutronError"]["type"], "PolicyNotAuthorized",
            "{}",
            r.body
        );
    };
    // update_network:tags keeps its default; update_network is not asked.
    let r = c
        .call(
            hyper::Method::PUT,
            &tags,
            Some(&alice),
            &[],
            Some(json!({"tags": ["a"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = c.put(&format!("{tags}/b"), &alice).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // create_network:tags through its old name, delete_network:tags and
    // get_network:tags (old name) are admin-only here.
    refused(c.post(&tags, &alice, json!({"tags": ["c"]})).await);
    refused(c.delete(&format!("{tags}/a"), &alice).await);
    refused(c.delete(&tags, &alice).await);
    refused(c.get(&tags, &alice).await);
    refused(c.get(&format!("{tags}/a"), &alice).await);
    let r = c.post(&tags, &admin, json!({"tags": ["c"]})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = c.delete(&format!("{tags}/a"), &admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = c.get(&tags, &admin).await;
    assert_eq!(r.body, json!({"tags": ["b", "c"]}));
}

/// Starts a server over `data_dir` with `adjust`ed settings; the error it
/// refuses to start with.
async fn start_error(adjust: impl FnOnce(&mut Settings)) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = Settings::new(dir.path().join("data"));
    s.listen = "127.0.0.1:0".parse().expect("address");
    s.admin_password = Some(testkit::ADMIN_PASSWORD.into());
    s.password_hash_rounds = 4;
    adjust(&mut s);
    match ferrostack::serve::start(s).await {
        Ok(running) => {
            running.stop().await.expect("stop");
            panic!("the server started despite a bad policy file")
        }
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_bad_policy_file_stops_the_start_naming_the_rule() {
    // A rule that does not parse.
    let e = start_error(|s| {
        write(
            &s.data_dir.join("policy/network.yaml"),
            "get_network: ''\ncreate_network: 'rule:admin_only or'\n",
        )
    })
    .await;
    assert!(e.contains("\"create_network\""), "{e}");
    assert!(e.contains("network.yaml"), "{e}");

    // A reference to a rule nobody defined.
    let e = start_error(|s| {
        write(
            &s.data_dir.join("policy/identity.yaml"),
            "identity:get_user: 'rule:admin_required or rule:no_such_rule'\n",
        )
    })
    .await;
    assert!(e.contains("\"identity:get_user\""), "{e}");
    assert!(e.contains("rule:no_such_rule"), "{e}");

    // Rules that refer to each other in a circle.
    let e = start_error(|s| {
        write(
            &s.data_dir.join("policy/image.yaml"),
            "add_image: 'rule:mine'\nmine: 'rule:add_image'\n",
        )
    })
    .await;
    assert!(e.contains("refers to itself"), "{e}");

    // A value that is not a rule text.
    let e = start_error(|s| {
        let p = s.data_dir.with_file_name("p.yaml");
        write(&p, "delete_image: 3\n");
        s.policy_files.push(("image".into(), p));
    })
    .await;
    assert!(e.contains("\"delete_image\""), "{e}");

    // Not a map at all, a file that is missing, a service that is not.
    let e = start_error(|s| write(&s.data_dir.join("policy/image.yaml"), "- add_image\n")).await;
    assert!(e.contains("not a map"), "{e}");
    let e = start_error(|s| {
        s.policy_files
            .push(("network".into(), s.data_dir.join("missing.yaml")))
    })
    .await;
    assert!(e.contains("missing.yaml"), "{e}");
    let e = start_error(|s| {
        s.policy_files
            .push(("compute".into(), s.data_dir.join("nova.yaml")))
    })
    .await;
    assert!(e.contains("\"compute\""), "{e}");
}
