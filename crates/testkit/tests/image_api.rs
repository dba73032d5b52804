//! Image v2 through a real socket: records, JSON patch, listing, sharing and
//! policy, data round trips with checksums, the format inspector on hostile
//! images (checklist 19 and 21), web-download's address guard (checklist
//! 22), interrupted uploads, quotas. Each test starts its own stack.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use md5::Digest as _;
use serde_json::{json, Value};
use testkit::{Client, RawResp, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V2: &str = "/image/v2";
const PATCH_CT: &str = "application/openstack-images-v2.1-json-patch";

// ----- helpers ---------------------------------------------------------------

async fn create(c: &Client, tok: &str, body: Value) -> Value {
    let r = c.post(&format!("{V2}/images"), tok, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

async fn create_id(c: &Client, tok: &str, body: Value) -> String {
    create(c, tok, body).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn put_data(c: &Client, tok: &str, id: &str, what: &str, data: &[u8]) -> RawResp {
    c.call_raw(
        Method::PUT,
        &format!("{V2}/images/{id}/{what}"),
        Some(tok),
        &[("content-type", "application/octet-stream")],
        Bytes::copy_from_slice(data),
    )
    .await
}

async fn patch(c: &Client, tok: &str, id: &str, ops: Value) -> RawResp {
    c.call_raw(
        Method::PATCH,
        &format!("{V2}/images/{id}"),
        Some(tok),
        &[("content-type", PATCH_CT)],
        Bytes::from(ops.to_string()),
    )
    .await
}

async fn show(c: &Client, tok: &str, id: &str) -> Value {
    let r = c.get(&format!("{V2}/images/{id}"), tok).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

/// Polls until the image has `status` (imports run as tasks), for up to
/// 30 s: generous, so a loaded CI machine does not fail the wait.
async fn wait_status(c: &Client, tok: &str, id: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let img = show(c, tok, id).await;
        if img["status"] == status {
            return img;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "image {id} never reached {status}: {}",
        show(c, tok, id).await
    );
}

async fn import(c: &Client, tok: &str, id: &str, method: Value) -> testkit::Resp {
    c.post(
        &format!("{V2}/images/{id}/import"),
        tok,
        json!({ "method": method }),
    )
    .await
}

fn md5_hex(d: &[u8]) -> String {
    hex(&md5::Md5::digest(d))
}

fn sha512_hex(d: &[u8]) -> String {
    hex(&sha2::Sha512::digest(d))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn qemu_img(args: &[&str]) {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img must be installed (qemu-utils) for the image tests");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes an image with qemu-img and returns its bytes.
fn make(dir: &Path, name: &str, fmt: &str, size: &str, opts: &[&str]) -> Vec<u8> {
    let p = dir.join(name);
    let mut args = vec!["create", "-q", "-f", fmt];
    args.extend_from_slice(opts);
    let ps = p.to_str().unwrap().to_string();
    args.push(&ps);
    args.push(size);
    qemu_img(&args);
    std::fs::read(&p).unwrap()
}

/// Every name in a directory of the data dir (temporary files included).
fn files(stack: &Stack, sub: &str) -> Vec<String> {
    let d: PathBuf = stack.data_dir().join(sub);
    match std::fs::read_dir(&d) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    }
}

fn names(list: &Value) -> Vec<String> {
    list["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap_or("").to_string())
        .collect()
}

// ----- records -----------------------------------------------------------------

#[tokio::test]
async fn catalog_and_version_discovery() {
    let s = Stack::start().await;
    let c = s.client();
    let r = c
        .auth_password("admin", testkit::ADMIN_PASSWORD, Some("admin"))
        .await;
    let cat = r.body["token"]["catalog"].as_array().unwrap();
    let img = cat
        .iter()
        .find(|e| e["type"] == "image")
        .expect("image in catalog");
    let public = img["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["interface"] == "public")
        .unwrap();
    assert_eq!(public["url"], format!("http://{}/image", s.addr));
    let v = c.call(Method::GET, "/image", None, &[], None).await;
    assert_eq!(v.status, StatusCode::MULTIPLE_CHOICES);
    // Only versions whose calls are all served: up to 2.9 (2.10 deletes
    // from one store, 2.13 quota usage, 2.14+ the cache, 2.17 locations
    // are not served).
    let ids: Vec<(&str, &str)> = v.body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["id"].as_str().unwrap(), v["status"].as_str().unwrap()))
        .collect();
    let mut want = vec![("v2.9", "CURRENT")];
    want.extend(
        [
            "v2.8", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0",
        ]
        .map(|v| (v, "SUPPORTED")),
    );
    assert_eq!(ids, want);
    assert_eq!(
        v.body["versions"][0]["links"][0]["href"],
        format!("http://{}/image/v2/", s.addr)
    );
    let v = c.call(Method::GET, "/image/v2", None, &[], None).await;
    assert_eq!(v.status, StatusCode::OK);
    assert!(v.body["versions"].as_array().unwrap().len() > 1);
    // Without a token the API answers 401 in Glance's error shape.
    let r = c
        .call(Method::GET, "/image/v2/images", None, &[], None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["code"], "401 Unauthorized");
}

#[tokio::test]
async fn create_upload_and_download_round_trip_with_checksums() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let dir = tempfile::tempdir().unwrap();
    let data = make(dir.path(), "g.qcow2", "qcow2", "64M", &[]);
    let r = c
        .post(
            &format!("{V2}/images"),
            &admin,
            json!({"name": "guest", "disk_format": "qcow2", "container_format": "bare",
                   "visibility": "public", "os_distro": "debian", "tags": ["a", "b"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.header("location").unwrap(),
        format!("http://{}/image/v2/images/{id}", s.addr)
    );
    assert_eq!(
        r.header("openstack-image-import-methods").unwrap(),
        "glance-direct,web-download"
    );
    assert_eq!(r.header("openstack-image-store-ids").unwrap(), "file");
    let b = &r.body;
    assert_eq!(b["status"], "queued");
    assert_eq!(b["os_distro"], "debian");
    assert_eq!(b["tags"], json!(["a", "b"]));
    assert_eq!(b["self"], format!("/v2/images/{id}"));
    assert_eq!(b["file"], format!("/v2/images/{id}/file"));
    assert_eq!(b["schema"], "/v2/schemas/image");
    assert_eq!(b["size"], Value::Null);
    assert_eq!(b["protected"], false);
    let created = b["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 20, "{created}");
    assert_eq!(id.len(), 36);
    // No data yet: 204.
    let d = c
        .call_raw(
            Method::GET,
            &format!("{V2}/images/{id}/file"),
            Some(&admin),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);

    let up = put_data(&c, &admin, &id, "file", &data).await;
    assert_eq!(up.status, StatusCode::NO_CONTENT, "{:?}", up.json());
    let img = show(&c, &admin, &id).await;
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], data.len());
    assert_eq!(img["virtual_size"], 64 << 20);
    assert_eq!(img["checksum"], md5_hex(&data));
    assert_eq!(img["os_hash_algo"], "sha512");
    assert_eq!(img["os_hash_value"], sha512_hex(&data));
    assert_eq!(files(&s, "images"), vec![id.clone()]);

    let d = c
        .call_raw(
            Method::GET,
            &format!("{V2}/images/{id}/file"),
            Some(&admin),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(
        d.header("content-type").unwrap(),
        "application/octet-stream"
    );
    assert_eq!(d.header("content-md5").unwrap(), md5_hex(&data));
    assert_eq!(d.header("content-length").unwrap(), data.len().to_string());
    assert!(d.body == data, "downloaded bytes differ");
    // A range.
    let d = c
        .call_raw(
            Method::GET,
            &format!("{V2}/images/{id}/file"),
            Some(&admin),
            &[("range", "bytes=4-7")],
            Bytes::new(),
        )
        .await;
    assert_eq!(d.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&d.body[..], &data[4..8]);
    // A second upload to an active image conflicts.
    let again = put_data(&c, &admin, &id, "file", &data).await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    // Deleting removes the data.
    let del = c.delete(&format!("{V2}/images/{id}"), &admin).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert!(files(&s, "images").is_empty());
    let gone = c.get(&format!("{V2}/images/{id}"), &admin).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.body["code"], "404 Not Found");
    assert!(gone.body["message"].as_str().unwrap().contains(&id));
}

#[tokio::test]
async fn create_validates_every_field() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    for (body, status, needle) in [
        (json!({"status": "active"}), 403, "read-only"),
        (json!({"size": 5}), 403, "read-only"),
        (json!({"os_glance_import_task": "x"}), 403, "reserved"),
        (json!({"locations": []}), 403, "reserved"),
        (json!({"disk_format": "floppy"}), 400, "disk_format"),
        (json!({"container_format": "tar"}), 400, "container_format"),
        (json!({"visibility": "everyone"}), 400, "visibility"),
        (json!({"protected": "yes"}), 400, "protected"),
        (json!({"min_disk": -1}), 400, "min_disk"),
        (json!({"name": "x".repeat(256)}), 400, "name"),
        (json!({"tags": "t"}), 400, "tags"),
        (json!({"id": "not-a-uuid"}), 400, "id"),
        (json!({"os_distro": 5}), 400, "os_distro"),
        (json!("[1, 2]"), 400, "JSON"),
        (json!("{"), 400, "Malformed"),
    ] {
        let r = c.post(&format!("{V2}/images"), &admin, body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.body);
        let msg = r.body["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    // JSON bodies keep a small limit (only the data routes have none).
    let big = json!({"name": "big", "description": "x".repeat(200_000)});
    let r = c.post(&format!("{V2}/images"), &admin, big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert_eq!(r.body["code"], "413 Payload Too Large");
    // A chosen id, then the same id again: 409.
    let id = "4b1b8bbd-4a4d-4a1e-9d2c-2a4c0e3c9f10";
    create(&c, &admin, json!({"id": id, "name": "x"})).await;
    let r = c
        .post(&format!("{V2}/images"), &admin, json!({"id": id}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Upload before the formats are set: 400 naming them.
    let r = put_data(&c, &admin, id, "file", b"data").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("disk_format"));
    // Wrong content type for data: 415.
    let r = c
        .call_raw(
            Method::PUT,
            &format!("{V2}/images/{id}/file"),
            Some(&admin),
            &[("content-type", "application/json")],
            Bytes::from_static(b"{}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn empty_data_is_accepted_only_where_glances_inspector_accepts_it() {
    // Glance's inspector calls zero bytes raw: fine for a declared raw and
    // for the formats it cannot inspect, a mismatch for every other one
    // (iso included). A refused image stays queued with no data.
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    for (fmt, accepted) in [
        ("raw", true),
        ("ami", true),
        ("ari", true),
        ("aki", true),
        ("ploop", true),
        ("qcow2", false),
        ("iso", false),
        ("vmdk", false),
        ("vhd", false),
        ("vhdx", false),
        ("vdi", false),
    ] {
        let id = create_id(
            &c,
            &admin,
            json!({"name": fmt, "disk_format": fmt, "container_format": "bare"}),
        )
        .await;
        for what in ["file", "stage"] {
            let r = put_data(&c, &admin, &id, what, b"").await;
            if what == "stage" {
                // Staging does not inspect; the import does.
                if r.status == StatusCode::NO_CONTENT {
                    let r = import(&c, &admin, &id, json!({"name": "glance-direct"})).await;
                    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
                    let want = if accepted { "active" } else { "queued" };
                    let img = wait_status(&c, &admin, &id, want).await;
                    if !accepted {
                        assert_eq!(img["os_glance_failed_import"], "file", "{img}");
                        let msg = task_message(&c, &admin, &id).await;
                        assert!(msg.contains("empty"), "{fmt}: {msg}");
                    }
                }
                continue;
            }
            let img = show(&c, &admin, &id).await;
            if accepted {
                assert_eq!(r.status, StatusCode::NO_CONTENT, "{fmt}: {:?}", r.json());
                assert_eq!(
                    (img["status"].clone(), img["size"].clone()),
                    (json!("active"), json!(0)),
                    "{fmt}"
                );
            } else {
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{fmt}: {:?}", r.json());
                let msg = r.json()["message"].as_str().unwrap().to_string();
                assert!(msg.contains("empty"), "{fmt}: {msg}");
                assert_eq!(img["status"], "queued", "{fmt}");
            }
        }
    }
    assert!(
        files(&s, "staging").is_empty(),
        "{:?}",
        files(&s, "staging")
    );
}

#[tokio::test]
async fn json_patch_updates_properties_tags_and_refuses_read_only_attributes() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let id = create_id(
        &c,
        &admin,
        json!({"name": "p", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let r = patch(
        &c,
        &admin,
        &id,
        json!([
            {"op": "add", "path": "/os_distro", "value": "debian"},
            {"op": "replace", "path": "/name", "value": "renamed"},
            {"op": "replace", "path": "/tags", "value": ["x", "y"]},
            {"op": "add", "path": "/min_ram", "value": 512},
            {"op": "replace", "path": "/protected", "value": true}
        ]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let b = r.json();
    assert_eq!(b["os_distro"], "debian");
    assert_eq!(b["name"], "renamed");
    assert_eq!(b["tags"], json!(["x", "y"]));
    assert_eq!(b["min_ram"], 512);
    assert_eq!(b["protected"], true);
    // The 2.0 form of the media type and operations.
    let r = c
        .call_raw(
            Method::PATCH,
            &format!("{V2}/images/{id}"),
            Some(&admin),
            &[(
                "content-type",
                "application/openstack-images-v2.0-json-patch",
            )],
            Bytes::from(json!([{"replace": "/os_distro", "value": "fedora"}]).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(r.json()["os_distro"], "fedora");
    let r = patch(
        &c,
        &admin,
        &id,
        json!([{"op": "remove", "path": "/os_distro"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json().get("os_distro").is_none());
    for (ops, status, needle) in [
        (
            json!([{"op": "remove", "path": "/os_distro"}]),
            409,
            "does not exist",
        ),
        (
            json!([{"op": "replace", "path": "/nope", "value": "v"}]),
            409,
            "does not exist",
        ),
        (
            json!([{"op": "replace", "path": "/status", "value": "active"}]),
            403,
            "read-only",
        ),
        (
            json!([{"op": "replace", "path": "/checksum", "value": "x"}]),
            403,
            "read-only",
        ),
        (
            json!([{"op": "add", "path": "/os_glance_failed_import", "value": "x"}]),
            403,
            "reserved",
        ),
        (
            json!([{"op": "remove", "path": "/name"}]),
            403,
            "cannot be removed",
        ),
        (
            json!([{"op": "move", "path": "/name", "value": "x"}]),
            400,
            "move",
        ),
        (
            json!([{"op": "add", "path": "name", "value": "x"}]),
            400,
            "start with",
        ),
        (
            json!([{"op": "add", "path": "/a/b", "value": "x"}]),
            400,
            "top-level",
        ),
        (
            json!([{"op": "add", "path": "/min_disk", "value": "big"}]),
            400,
            "min_disk",
        ),
        (json!({"op": "add"}), 400, "list"),
    ] {
        let r = patch(&c, &admin, &id, ops.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{ops}: {:?}", r.json());
        let m = r.json()["message"].as_str().unwrap_or("").to_string();
        assert!(m.contains(needle), "{ops}: {m}");
    }
    // A plain JSON content type is refused with 415, as Glance does.
    let r = c
        .call_raw(
            Method::PATCH,
            &format!("{V2}/images/{id}"),
            Some(&admin),
            &[("content-type", "application/json")],
            Bytes::from_static(b"[]"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Tags one by one.
    let t = c.put(&format!("{V2}/images/{id}/tags/z"), &admin).await;
    assert_eq!(t.status, StatusCode::NO_CONTENT);
    assert_eq!(show(&c, &admin, &id).await["tags"], json!(["x", "y", "z"]));
    let t = c.delete(&format!("{V2}/images/{id}/tags/x"), &admin).await;
    assert_eq!(t.status, StatusCode::NO_CONTENT);
    let t = c.delete(&format!("{V2}/images/{id}/tags/x"), &admin).await;
    assert_eq!(t.status, StatusCode::NOT_FOUND);
    // Protected: cannot be deleted until unprotected.
    let d = c.delete(&format!("{V2}/images/{id}"), &admin).await;
    assert_eq!(d.status, StatusCode::FORBIDDEN);
    assert!(d.body["message"].as_str().unwrap().contains("protected"));
    let r = patch(
        &c,
        &admin,
        &id,
        json!([{"op": "replace", "path": "/protected", "value": false}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        c.delete(&format!("{V2}/images/{id}"), &admin).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn disk_and_container_formats_change_only_while_queued() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let id = create_id(
        &c,
        &admin,
        json!({"name": "f", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    assert_eq!(
        put_data(&c, &admin, &id, "file", &[7u8; 4096]).await.status,
        StatusCode::NO_CONTENT
    );
    let r = patch(
        &c,
        &admin,
        &id,
        json!([{"op": "replace", "path": "/disk_format", "value": "qcow2"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json()["message"].as_str().unwrap().contains("queued"));
}

// ----- listing ------------------------------------------------------------------

#[tokio::test]
async fn list_filters_sorts_pages_and_compares_times() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    for (name, distro, tag) in [
        ("c", "debian", "test"),
        ("a", "debian", "test"),
        ("b", "fedora", "test"),
        ("d", "debian", "other"),
    ] {
        create(&c, &admin, json!({"name": name, "os_distro": distro, "tags": [tag], "disk_format": "raw", "container_format": "bare"})).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let l = c
        .get(
            &format!("{V2}/images?os_distro=debian&tag=test&sort=name:asc&limit=5"),
            &admin,
        )
        .await;
    assert_eq!(l.status, StatusCode::OK, "{}", l.body);
    assert_eq!(names(&l.body), ["a", "c"]);
    assert_eq!(l.body["schema"], "/v2/schemas/images");
    assert!(l.body.get("next").is_none());
    // Default order: newest first.
    let l = c.get(&format!("{V2}/images"), &admin).await;
    assert_eq!(names(&l.body), ["d", "b", "a", "c"]);
    // Pages.
    let p1 = c
        .get(
            &format!("{V2}/images?sort_key=name&sort_dir=asc&limit=2"),
            &admin,
        )
        .await;
    assert_eq!(names(&p1.body), ["a", "b"]);
    let next = p1.body["next"].as_str().unwrap().to_string();
    assert!(next.starts_with("/v2/images?"), "{next}");
    let p2 = c.get(&format!("/image{next}"), &admin).await;
    assert_eq!(names(&p2.body), ["c", "d"]);
    assert!(p2.body.get("next").is_none());
    // The in: operator and core-attribute filters.
    let l = c
        .get(&format!("{V2}/images?name=in:a,d&sort=name"), &admin)
        .await;
    assert_eq!(names(&l.body), ["a", "d"]);
    let l = c
        .get(
            &format!("{V2}/images?status=queued&disk_format=raw&limit=1"),
            &admin,
        )
        .await;
    assert_eq!(l.body["images"].as_array().unwrap().len(), 1);
    assert!(l.body["next"].is_string());
    // Time comparisons.
    let future = "2999-01-01T00:00:00Z";
    let past = "2000-01-01T00:00:00Z";
    for (q, n) in [
        (format!("created_at=gt:{past}"), 4),
        (format!("created_at=lt:{past}"), 0),
        (format!("updated_at=lte:{future}"), 4),
        (format!("updated_at=gte:{future}"), 0),
        (format!("created_at=neq:{past}"), 4),
    ] {
        let l = c.get(&format!("{V2}/images?{q}"), &admin).await;
        assert_eq!(l.status, StatusCode::OK, "{q}: {}", l.body);
        assert_eq!(l.body["images"].as_array().unwrap().len(), n, "{q}");
    }
    for q in [
        "created_at=after:2020-01-01T00:00:00Z",
        "created_at=gt:yesterday",
        "sort_key=password",
        "sort=name:sideways",
        "limit=-1",
        "limit=x",
        "visibility=everyone",
        "member_status=maybe",
        "size_min=big",
        "protected=perhaps",
        "marker=00000000-0000-0000-0000-000000000000",
        "sort=name&sort_key=id",
    ] {
        let l = c.get(&format!("{V2}/images?{q}"), &admin).await;
        assert_eq!(l.status, StatusCode::BAD_REQUEST, "{q}: {}", l.body);
    }
}

// ----- visibility, sharing, policy ---------------------------------------------------

#[tokio::test]
async fn a_member_of_another_project_sees_only_what_it_may() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let (demo_id, _) = c
        .project_user(&admin, "demo", "alice", "s3cret", "member")
        .await;
    let alice = c.token("alice", "s3cret", "demo").await;
    let body = |name: &str, vis: &str| json!({"name": name, "visibility": vis, "disk_format": "raw", "container_format": "bare"});
    let private = create_id(&c, &admin, body("private", "private")).await;
    let public = create_id(&c, &admin, body("public", "public")).await;
    let community = create_id(&c, &admin, body("community", "community")).await;
    let shared = create_id(&c, &admin, body("shared", "shared")).await;
    assert_eq!(
        put_data(&c, &admin, &public, "file", &[1u8; 1024])
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let l = c.get(&format!("{V2}/images"), &alice).await;
    assert_eq!(names(&l.body), ["public"]);
    assert_eq!(
        c.get(&format!("{V2}/images/{private}"), &alice)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(&format!("{V2}/images/{shared}"), &alice).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(&format!("{V2}/images/{community}"), &alice)
            .await
            .status,
        StatusCode::OK
    );
    let l = c
        .get(&format!("{V2}/images?visibility=community"), &alice)
        .await;
    assert_eq!(names(&l.body), ["community"]);
    // Not hers to delete, change or share.
    let d = c.delete(&format!("{V2}/images/{public}"), &alice).await;
    assert_eq!(d.status, StatusCode::FORBIDDEN);
    assert!(d.body["message"].as_str().unwrap().contains("delete_image"));
    assert_eq!(
        c.delete(&format!("{V2}/images/{private}"), &alice)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = patch(
        &c,
        &alice,
        &public,
        json!([{"op": "replace", "path": "/name", "value": "mine"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // She can download the public image, not the private one.
    let d = c
        .call_raw(
            Method::GET,
            &format!("{V2}/images/{public}/file"),
            Some(&alice),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.body.len(), 1024);
    let d = c
        .call_raw(
            Method::GET,
            &format!("{V2}/images/{private}/file"),
            Some(&alice),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(d.status, StatusCode::NOT_FOUND);
    // Only admin may publicize; a member may create community and shared.
    let r = c
        .post(&format!("{V2}/images"), &alice, body("x", "public"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("publicize_image"));
    let own = create_id(&c, &alice, body("own", "private")).await;
    let r = patch(
        &c,
        &alice,
        &own,
        json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = patch(
        &c,
        &alice,
        &own,
        json!([{"op": "replace", "path": "/visibility", "value": "community"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Nor may she create images for another project.
    let r = c
        .post(
            &format!("{V2}/images"),
            &alice,
            json!({"name": "y", "owner": "someone-else"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The admin sees everything, hers included.
    let l = c.get(&format!("{V2}/images?sort=name"), &admin).await;
    assert_eq!(
        names(&l.body),
        ["community", "own", "private", "public", "shared"]
    );

    // Sharing: pending memberships are not listed, accepted ones are.
    let m = c
        .post(
            &format!("{V2}/images/{shared}/members"),
            &admin,
            json!({"member": demo_id}),
        )
        .await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.body);
    assert_eq!(m.body["status"], "pending");
    assert_eq!(m.body["schema"], "/v2/schemas/member");
    let dup = c
        .post(
            &format!("{V2}/images/{shared}/members"),
            &admin,
            json!({"member": demo_id}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let nope = c
        .post(
            &format!("{V2}/images/{private}/members"),
            &admin,
            json!({"member": demo_id}),
        )
        .await;
    assert_eq!(nope.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.get(&format!("{V2}/images/{shared}"), &alice).await.status,
        StatusCode::OK
    );
    assert!(
        !names(&c.get(&format!("{V2}/images"), &alice).await.body).contains(&"shared".to_string())
    );
    let l = c
        .get(
            &format!("{V2}/images?member_status=pending&visibility=shared"),
            &alice,
        )
        .await;
    assert_eq!(names(&l.body), ["shared"]);
    // The owner cannot accept for the member; the member can.
    let acc = c
        .call(
            Method::PUT,
            &format!("{V2}/images/{shared}/members/{demo_id}"),
            Some(&admin),
            &[],
            Some(json!({"status": "accepted"})),
        )
        .await;
    assert_eq!(acc.status, StatusCode::FORBIDDEN);
    let bad = c
        .call(
            Method::PUT,
            &format!("{V2}/images/{shared}/members/{demo_id}"),
            Some(&alice),
            &[],
            Some(json!({"status": "maybe"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let acc = c
        .call(
            Method::PUT,
            &format!("{V2}/images/{shared}/members/{demo_id}"),
            Some(&alice),
            &[],
            Some(json!({"status": "accepted"})),
        )
        .await;
    assert_eq!(acc.status, StatusCode::OK, "{}", acc.body);
    assert_eq!(acc.body["status"], "accepted");
    let l = c.get(&format!("{V2}/images?sort=name"), &alice).await;
    assert_eq!(names(&l.body), ["own", "public", "shared"]);
    // A member sees only its own membership and cannot add others.
    let ms = c
        .get(&format!("{V2}/images/{shared}/members"), &alice)
        .await;
    assert_eq!(ms.body["members"].as_array().unwrap().len(), 1);
    let add = c
        .post(
            &format!("{V2}/images/{shared}/members"),
            &alice,
            json!({"member": "other"}),
        )
        .await;
    assert_eq!(add.status, StatusCode::FORBIDDEN);
    // The owner removes the member: the image disappears for her.
    let del = c
        .delete(&format!("{V2}/images/{shared}/members/{demo_id}"), &admin)
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(&format!("{V2}/images/{shared}"), &alice).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn deactivated_images_cannot_be_downloaded_until_reactivated() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    c.project_user(&admin, "demo", "bob", "s3cret", "member")
        .await;
    let bob = c.token("bob", "s3cret", "demo").await;
    let id = create_id(&c, &admin, json!({"name": "d", "visibility": "public", "disk_format": "raw", "container_format": "bare"})).await;
    let act = |what: &'static str| format!("{V2}/images/{id}/actions/{what}");
    // Not active yet.
    let r = c
        .call(Method::POST, &act("deactivate"), Some(&admin), &[], None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        put_data(&c, &admin, &id, "file", &[3u8; 512]).await.status,
        StatusCode::NO_CONTENT
    );
    // A member of another project may not deactivate the admin's image.
    let r = c
        .call(Method::POST, &act("deactivate"), Some(&bob), &[], None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = c
        .call(Method::POST, &act("deactivate"), Some(&admin), &[], None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(show(&c, &admin, &id).await["status"], "deactivated");
    let d = c
        .call_raw(
            Method::GET,
            &format!("{V2}/images/{id}/file"),
            Some(&bob),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(d.status, StatusCode::FORBIDDEN);
    let r = c
        .call(Method::POST, &act("reactivate"), Some(&admin), &[], None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(show(&c, &admin, &id).await["status"], "active");
    let d = c
        .call_raw(
            Method::GET,
            &format!("{V2}/images/{id}/file"),
            Some(&bob),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.body.len(), 512);
}

// ----- checklist 19 and 21: hostile images -----------------------------------------

#[tokio::test]
async fn hostile_images_are_rejected_at_upload_and_leave_nothing_behind() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let dir = tempfile::tempdir().unwrap();
    let ext = format!("data_file={}", dir.path().join("x.data").display());
    let mut v1 = make(dir.path(), "v1.qcow2", "qcow2", "16M", &[]);
    v1[4..8].copy_from_slice(&1u32.to_be_bytes());
    let vmdk = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 2048 FLAT \"/etc/passwd\" 0\n\nddb.adapterType = \"ide\"\n".to_vec();
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "backing file /etc/passwd",
            "qcow2",
            make(
                dir.path(),
                "b.qcow2",
                "qcow2",
                "1M",
                &["-u", "-b", "/etc/passwd", "-F", "raw"],
            ),
            "backing file",
        ),
        (
            "external data file",
            "qcow2",
            make(dir.path(), "e.qcow2", "qcow2", "16M", &["-o", &ext]),
            "external data file",
        ),
        (
            "vmdk extent naming a host file",
            "vmdk",
            vmdk.clone(),
            "/etc/passwd",
        ),
        ("vmdk uploaded as raw", "raw", vmdk, "vmdk"),
        (
            "qcow2 declared as raw",
            "raw",
            make(dir.path(), "q.qcow2", "qcow2", "16M", &[]),
            "declared as raw",
        ),
        ("qcow2 version 1", "qcow2", v1, "version 1"),
    ];
    for (what, declared, data, needle) in cases {
        let id = create_id(
            &c,
            &admin,
            json!({"name": what, "disk_format": declared, "container_format": "bare"}),
        )
        .await;
        let r = put_data(&c, &admin, &id, "file", &data).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {:?}", r.json());
        let msg = r.json()["message"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{what}: {msg}");
        assert!(
            !msg.contains(dir.path().to_str().unwrap()),
            "{what} leaks a path: {msg}"
        );
        let img = show(&c, &admin, &id).await;
        assert_eq!(img["status"], "queued", "{what}");
        assert_eq!(img["size"], Value::Null, "{what}");
        assert!(
            files(&s, "images").is_empty(),
            "{what}: {:?}",
            files(&s, "images")
        );
        // The image is still usable: good data is accepted afterwards.
        if declared == "qcow2" {
            let good = make(dir.path(), "good.qcow2", "qcow2", "1M", &[]);
            assert_eq!(
                put_data(&c, &admin, &id, "file", &good).await.status,
                StatusCode::NO_CONTENT
            );
            assert_eq!(show(&c, &admin, &id).await["status"], "active");
            c.delete(&format!("{V2}/images/{id}"), &admin).await;
        }
    }
    assert!(files(&s, "images").is_empty());
}

#[tokio::test]
async fn hostile_staged_images_fail_the_import_like_glance() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let dir = tempfile::tempdir().unwrap();
    let data = make(
        dir.path(),
        "b.qcow2",
        "qcow2",
        "1M",
        &["-u", "-b", "/etc/passwd", "-F", "raw"],
    );
    let id = create_id(
        &c,
        &admin,
        json!({"name": "i", "disk_format": "qcow2", "container_format": "bare"}),
    )
    .await;
    assert_eq!(
        put_data(&c, &admin, &id, "stage", &data).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(show(&c, &admin, &id).await["status"], "uploading");
    let r = import(&c, &admin, &id, json!({"name": "glance-direct"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let img = wait_status(&c, &admin, &id, "queued").await;
    assert_eq!(img["os_glance_failed_import"], "file");
    assert_eq!(img["os_glance_importing_to_stores"], "");
    assert!(files(&s, "images").is_empty());
    assert!(files(&s, "staging").is_empty());
    let t = c.get(&format!("{V2}/images/{id}/tasks"), &admin).await;
    assert_eq!(t.body["tasks"][0]["status"], "failure");
    assert!(t.body["tasks"][0]["message"]
        .as_str()
        .unwrap()
        .contains("backing file"));
}

#[tokio::test]
async fn a_tiny_image_declaring_a_petabyte_reports_its_virtual_size() {
    // Checklist 21: the flavor check belongs to compute; the image service
    // must report the declared virtual size exactly so compute can refuse.
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let dir = tempfile::tempdir().unwrap();
    let data = make(dir.path(), "big.qcow2", "qcow2", "1P", &[]);
    assert!(data.len() < 32 << 20, "{}", data.len());
    let id = create_id(
        &c,
        &admin,
        json!({"name": "big", "disk_format": "qcow2", "container_format": "bare"}),
    )
    .await;
    assert_eq!(
        put_data(&c, &admin, &id, "file", &data).await.status,
        StatusCode::NO_CONTENT
    );
    let img = show(&c, &admin, &id).await;
    assert_eq!(img["virtual_size"], 1u64 << 50);
    assert_eq!(img["size"], data.len());
}

// ----- import ---------------------------------------------------------------------

#[tokio::test]
async fn glance_direct_import_and_the_info_endpoints() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let info = c.get(&format!("{V2}/info/import"), &admin).await;
    assert_eq!(
        info.body["import-methods"]["value"],
        json!(["glance-direct", "web-download"])
    );
    let stores = c.get(&format!("{V2}/info/stores"), &admin).await;
    assert_eq!(stores.body["stores"][0]["id"], "file");
    let dir = tempfile::tempdir().unwrap();
    let data = make(dir.path(), "g.qcow2", "qcow2", "32M", &[]);
    let id = create_id(
        &c,
        &admin,
        json!({"name": "g2", "disk_format": "qcow2", "container_format": "bare"}),
    )
    .await;
    // Importing before staging: 409.
    let r = import(&c, &admin, &id, json!({"name": "glance-direct"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    for (m, status) in [
        (json!({"name": "copy-image"}), 400),
        (json!({"name": "teleport"}), 400),
        (json!({"name": "web-download"}), 400),
        (json!("glance-direct"), 400),
    ] {
        let r = import(&c, &admin, &id, m.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{m}: {}", r.body);
    }
    let r = c
        .post(
            &format!("{V2}/images/{id}/import"),
            &admin,
            json!({"method": {"name": "glance-direct"}, "stores": ["ceph"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        put_data(&c, &admin, &id, "stage", &data).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(files(&s, "staging"), vec![id.clone()]);
    let r = import(&c, &admin, &id, json!({"name": "glance-direct"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let img = wait_status(&c, &admin, &id, "active").await;
    assert_eq!(img["checksum"], md5_hex(&data));
    assert_eq!(img["os_hash_value"], sha512_hex(&data));
    assert_eq!(img["virtual_size"], 32 << 20);
    assert_eq!(img["os_glance_failed_import"], "");
    assert!(files(&s, "staging").is_empty());
    assert_eq!(files(&s, "images"), vec![id.clone()]);
    let t = c.get(&format!("{V2}/images/{id}/tasks"), &admin).await;
    assert_eq!(t.body["tasks"][0]["status"], "success");
}

/// A tiny HTTP server on 127.0.0.1 for web-download: `/image` serves
/// `data`, `/redirect-to?URL` answers 302 to URL, `/hop` redirects to
/// `/image`. Stops when the test ends (the task is aborted with the
/// runtime).
async fn serve_http(data: Vec<u8>) -> std::net::SocketAddr {
    serve(data, None).await
}

/// The same server over TLS with `tls`'s certificate.
async fn serve_https(data: Vec<u8>, tls: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    serve(data, Some(tokio_rustls::TlsAcceptor::from(tls))).await
}

async fn serve(data: Vec<u8>, tls: Option<tokio_rustls::TlsAcceptor>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let data = Arc::new(data);
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            let data = data.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => answer(sock, &data).await,
                    // A client that refuses the certificate ends here.
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(sock).await {
                            answer(s, &data).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Reads one request and answers it (see [`serve_http`]).
async fn answer<S>(mut sock: S, data: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let head = if path == "/image" {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            data.len()
        )
    } else if let Some(to) = path.strip_prefix("/redirect-to?") {
        format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    } else if path == "/short" {
        // Announces twice what it sends, then hangs up.
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            data.len() * 2
        )
    } else if path == "/hop" {
        "HTTP/1.1 301 Moved\r\nlocation: /image\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            .to_string()
    } else {
        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
    };
    let _ = sock.write_all(head.as_bytes()).await;
    if path == "/image" || path == "/short" {
        let _ = sock.write_all(data).await;
    }
    let _ = sock.shutdown().await;
}

/// A certificate authority made at test time, and server certificates it
/// issues.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ferrostack test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// The CA certificate (DER), to be trusted by the stack.
    fn der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// A server configuration with a certificate for `names` (DNS names or
    /// IP addresses) issued by this CA.
    fn server(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        server_config(cert.der().clone(), &key)
    }
}

fn server_config(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: &rcgen::KeyPair,
) -> Arc<rustls::ServerConfig> {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap(),
    )
}

/// A self-signed certificate for `names` that no stack trusts.
fn untrusted_server(names: &[&str]) -> Arc<rustls::ServerConfig> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).unwrap();
    server_config(c.cert.der().clone(), &c.signing_key)
}

/// The message of the image's (only) import task.
async fn task_message(c: &Client, tok: &str, id: &str) -> String {
    let t = c.get(&format!("{V2}/images/{id}/tasks"), tok).await;
    t.body["tasks"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn web_download_refuses_internal_addresses_in_every_spelling() {
    // Checklist 22, default settings.
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let local = serve_http(vec![0u8; 1024]).await;
    let ca = TestCa::new();
    let tls = serve_https(vec![0u8; 1024], ca.server(&["localhost", "127.0.0.1"])).await;
    let id = create_id(
        &c,
        &admin,
        json!({"name": "w", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    for uri in [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://0xa9fea9fe/".to_string(),
        "http://2852039166/".to_string(),
        "http://127.0.0.1/".to_string(),
        "http://127.1/".to_string(),
        "http://0x7f000001/".to_string(),
        "http://2130706433/".to_string(),
        "http://017700000001/".to_string(),
        "http://[::1]/".to_string(),
        "http://[::ffff:127.0.0.1]/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://172.16.0.1/".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://100.64.0.1/".to_string(),
        "http://0.0.0.0/".to_string(),
        "http://[fd00::1]/".to_string(),
        "http://[fe80::1]/".to_string(),
        "http://localhost/".to_string(),
        format!("http://{local}/image"),
        "https://169.254.169.254/latest/meta-data/".to_string(),
        "https://0xa9fea9fe/".to_string(),
        "https://127.1/".to_string(),
        "https://[::1]/".to_string(),
        "https://10.0.0.1/".to_string(),
        "https://localhost/".to_string(),
        format!("https://{tls}/image"),
        format!("https://localhost:{}/image", tls.port()),
    ] {
        let r = import(&c, &admin, &id, json!({"name": "web-download", "uri": uri})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.body);
        assert!(
            r.body["message"]
                .as_str()
                .unwrap()
                .contains("does not fetch"),
            "{uri}: {}",
            r.body
        );
    }
    // https to loopback is refused with the very message http gets.
    let message = |r: &testkit::Resp| r.body["message"].as_str().unwrap().to_string();
    for (http, https) in [
        (
            format!("http://{tls}/image"),
            format!("https://{tls}/image"),
        ),
        (
            format!("http://localhost:{}/image", tls.port()),
            format!("https://localhost:{}/image", tls.port()),
        ),
    ] {
        let a = import(
            &c,
            &admin,
            &id,
            json!({"name": "web-download", "uri": http}),
        )
        .await;
        let b = import(
            &c,
            &admin,
            &id,
            json!({"name": "web-download", "uri": https}),
        )
        .await;
        assert_eq!(
            (a.status, b.status),
            (StatusCode::BAD_REQUEST, StatusCode::BAD_REQUEST)
        );
        assert_eq!(message(&a), message(&b));
    }
    for (uri, needle) in [
        ("file:///etc/passwd", "scheme"),
        ("ftp://example.com/x", "scheme"),
        ("http://user:pw@example.com/", "credentials"),
    ] {
        let r = import(&c, &admin, &id, json!({"name": "web-download", "uri": uri})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{uri}: {}",
            r.body
        );
    }
    assert_eq!(show(&c, &admin, &id).await["status"], "queued");
}

#[tokio::test]
async fn web_download_fetches_checks_and_refuses_redirects_to_internal_addresses() {
    // The test switch allows loopback (the local server) and nothing else.
    let s = Stack::start_with(|st| st.image_import_allow_loopback = true).await;
    let c = s.client();
    let admin = c.admin_token().await;
    let dir = tempfile::tempdir().unwrap();
    let data = make(dir.path(), "w.qcow2", "qcow2", "8M", &[]);
    let local = serve_http(data.clone()).await;
    // Happy path, through one redirect.
    let id = create_id(
        &c,
        &admin,
        json!({"name": "web", "disk_format": "qcow2", "container_format": "bare"}),
    )
    .await;
    let r = import(
        &c,
        &admin,
        &id,
        json!({"name": "web-download", "uri": format!("http://{local}/hop")}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let img = wait_status(&c, &admin, &id, "active").await;
    assert_eq!(img["checksum"], md5_hex(&data));
    assert_eq!(img["virtual_size"], 8 << 20);
    // Redirects to internal addresses make the import fail (image back to
    // queued, os_glance_failed_import names the store).
    for target in [
        "http://169.254.169.254/latest/meta-data/",
        "http://0xa9fea9fe/",
        "http://10.0.0.1/",
        "http://[fe80::1]/x",
    ] {
        let id = create_id(
            &c,
            &admin,
            json!({"name": "redir", "disk_format": "qcow2", "container_format": "bare"}),
        )
        .await;
        let uri = format!("http://{local}/redirect-to?{target}");
        let r = import(&c, &admin, &id, json!({"name": "web-download", "uri": uri})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        let img = wait_status(&c, &admin, &id, "queued").await;
        assert_eq!(img["os_glance_failed_import"], "file", "{target}");
        let t = c.get(&format!("{V2}/images/{id}/tasks"), &admin).await;
        let msg = t.body["tasks"][0]["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains("redirect refused") && msg.contains("does not fetch"),
            "{target}: {msg}"
        );
    }
    // The remote end hangs up halfway: the import fails, nothing is kept.
    let id = create_id(
        &c,
        &admin,
        json!({"name": "short", "disk_format": "qcow2", "container_format": "bare"}),
    )
    .await;
    let r = import(
        &c,
        &admin,
        &id,
        json!({"name": "web-download", "uri": format!("http://{local}/short")}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let img = wait_status(&c, &admin, &id, "queued").await;
    assert_eq!(img["os_glance_failed_import"], "file");
    assert_eq!(img["size"], Value::Null);
    // A hostile image served over HTTP is refused by the inspector.
    let bad = make(
        dir.path(),
        "bad.qcow2",
        "qcow2",
        "1M",
        &["-u", "-b", "/etc/passwd", "-F", "raw"],
    );
    let local_bad = serve_http(bad).await;
    let id = create_id(
        &c,
        &admin,
        json!({"name": "badweb", "disk_format": "qcow2", "container_format": "bare"}),
    )
    .await;
    let r = import(
        &c,
        &admin,
        &id,
        json!({"name": "web-download", "uri": format!("http://{local_bad}/image")}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let img = wait_status(&c, &admin, &id, "queued").await;
    assert_eq!(img["os_glance_failed_import"], "file");
    let names: Vec<String> = files(&s, "images");
    assert_eq!(names.len(), 1, "{names:?}");
}

#[tokio::test]
async fn web_download_over_https_verifies_the_certificate_and_checks_every_hop() {
    // The test switches: loopback allowed, and the test CA trusted.
    let ca = TestCa::new();
    let ca_der = ca.der();
    let s = Stack::start_with(move |st| {
        st.image_import_allow_loopback = true;
        st.image_import_extra_root_certs = vec![ca_der];
    })
    .await;
    let c = s.client();
    let admin = c.admin_token().await;
    let dir = tempfile::tempdir().unwrap();
    let data = make(dir.path(), "s.qcow2", "qcow2", "8M", &[]);
    let good = serve_https(data.clone(), ca.server(&["localhost", "127.0.0.1"])).await;
    let plain = serve_http(data.clone()).await;
    let p = good.port();
    let qcow2 = json!({"name": "tls", "disk_format": "qcow2", "container_format": "bare"});
    // Imports that succeed, with both checksums: by DNS name, by IP address
    // (the certificate's IP SAN) through a relative redirect that stays on
    // https, http redirected to https, and https redirected to http.
    for uri in [
        format!("https://localhost:{p}/image"),
        format!("https://127.0.0.1:{p}/hop"),
        format!("http://{plain}/redirect-to?https://localhost:{p}/image"),
        format!("https://localhost:{p}/redirect-to?http://{plain}/image"),
    ] {
        let id = create_id(&c, &admin, qcow2.clone()).await;
        let r = import(&c, &admin, &id, json!({"name": "web-download", "uri": uri})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{uri}: {}", r.body);
        let img = wait_status(&c, &admin, &id, "active").await;
        assert_eq!(img["checksum"], md5_hex(&data), "{uri}");
        assert_eq!(img["os_hash_algo"], "sha512");
        assert_eq!(img["os_hash_value"], sha512_hex(&data), "{uri}");
        assert_eq!(img["size"], data.len());
        assert_eq!(img["virtual_size"], 8 << 20);
    }
    // Certificates that must be refused: issued by the trusted CA for
    // another name, and self-signed for the right names.
    let wrong = serve_https(data.clone(), ca.server(&["images.example.net"])).await;
    let untrusted = serve_https(data.clone(), untrusted_server(&["localhost", "127.0.0.1"])).await;
    for (uri, needle) in [
        (
            format!("https://localhost:{}/image", wrong.port()),
            "not valid for the name localhost",
        ),
        (
            format!("https://{wrong}/image"),
            "not valid for the name 127.0.0.1",
        ),
        (
            format!("https://localhost:{}/image", untrusted.port()),
            "not issued by a certificate authority this cloud trusts",
        ),
        // A redirect to a server whose certificate is wrong fails the same.
        (
            format!(
                "http://{plain}/redirect-to?https://localhost:{}/image",
                wrong.port()
            ),
            "not valid for the name localhost",
        ),
    ] {
        let id = create_id(&c, &admin, qcow2.clone()).await;
        let r = import(&c, &admin, &id, json!({"name": "web-download", "uri": uri})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{uri}: {}", r.body);
        let img = wait_status(&c, &admin, &id, "queued").await;
        assert_eq!(img["os_glance_failed_import"], "file", "{uri}");
        assert_eq!(img["size"], Value::Null);
        let msg = task_message(&c, &admin, &id).await;
        assert!(
            msg.contains("TLS certificate") && msg.contains("was refused") && msg.contains(needle),
            "{uri}: {msg}"
        );
    }
    // Redirects from https to internal addresses are refused like any other.
    for target in [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "https://0xa9fea9fe/",
        "https://[fe80::1]/x",
    ] {
        let id = create_id(&c, &admin, qcow2.clone()).await;
        let uri = format!("https://localhost:{p}/redirect-to?{target}");
        let r = import(&c, &admin, &id, json!({"name": "web-download", "uri": uri})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        let img = wait_status(&c, &admin, &id, "queued").await;
        assert_eq!(img["os_glance_failed_import"], "file", "{target}");
        let msg = task_message(&c, &admin, &id).await;
        assert!(
            msg.contains("redirect refused") && msg.contains("does not fetch"),
            "{target}: {msg}"
        );
    }
    // Only the successful imports left data behind.
    assert_eq!(files(&s, "images").len(), 4);
}

// ----- interrupted uploads, quotas, recovery --------------------------------------

/// Sends a PUT with Content-Length `total` but only `sent` bytes, then
/// closes the connection.
async fn cut_upload(s: &Stack, token: &str, path: &str, total: usize, sent: usize) {
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: {}\r\nx-auth-token: {token}\r\ncontent-type: application/octet-stream\r\ncontent-length: {total}\r\n\r\n",
        s.addr
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        sock.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    sock.flush().await.unwrap();
    // Let the server write some of it, then cut the connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(sock);
}

#[tokio::test]
async fn an_interrupted_upload_leaves_the_image_queued_with_no_stray_data() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let id = create_id(
        &c,
        &admin,
        json!({"name": "cut", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let total = 8 << 20;
    cut_upload(
        &s,
        &admin,
        &format!("{V2}/images/{id}/file"),
        total,
        total / 2,
    )
    .await;
    wait_status(&c, &admin, &id, "queued").await;
    // The temporary file is gone too.
    for _ in 0..100 {
        if files(&s, "images").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(files(&s, "images").is_empty(), "{:?}", files(&s, "images"));
    let img = show(&c, &admin, &id).await;
    assert_eq!(img["size"], Value::Null);
    // A retry works.
    let data = vec![0x5au8; total];
    assert_eq!(
        put_data(&c, &admin, &id, "file", &data).await.status,
        StatusCode::NO_CONTENT
    );
    let img = show(&c, &admin, &id).await;
    assert_eq!(img["status"], "active");
    assert_eq!(img["checksum"], md5_hex(&data));
    assert_eq!(files(&s, "images"), vec![id.clone()]);

    // The same for staging.
    let id2 = create_id(
        &c,
        &admin,
        json!({"name": "cut2", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    cut_upload(
        &s,
        &admin,
        &format!("{V2}/images/{id2}/stage"),
        total,
        total / 2,
    )
    .await;
    wait_status(&c, &admin, &id2, "queued").await;
    for _ in 0..100 {
        if files(&s, "staging").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        files(&s, "staging").is_empty(),
        "{:?}",
        files(&s, "staging")
    );
}

/// Uploads 1 MiB of raw data to image `id` (`what`: `file` or `stage`)
/// and stops it between the data reaching the store (or the staging area)
/// and the transaction that ends the upload: once the upload began, a
/// transaction of the test runs `sql` (which takes SQLite's write lock)
/// and keeps it open, the rest of the body is sent, and this returns when
/// the data is in the store (the activation then waits for the lock).
async fn upload_held_at_activation<'p>(
    s: &'p Stack,
    c: &Client,
    admin: &str,
    id: &str,
    what: &str,
    sql: &str,
) -> (
    tokio::net::TcpStream,
    store::sqlx::Transaction<'p, store::sqlx::Sqlite>,
) {
    let total = 1 << 20;
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "PUT {V2}/images/{id}/{what} HTTP/1.1\r\nhost: {}\r\nx-auth-token: {admin}\r\ncontent-type: application/octet-stream\r\ncontent-length: {total}\r\nconnection: close\r\n\r\n",
        s.addr
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&vec![0u8; total - 10]).await.unwrap();
    sock.flush().await.unwrap();
    let (status, dir) = if what == "file" {
        ("saving", "images")
    } else {
        ("uploading", "staging")
    };
    wait_status(c, admin, id, status).await;
    let pool = &s.running.as_ref().unwrap().image.pool;
    let mut tx = pool.begin().await.unwrap();
    store::sqlx::query(sql)
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sock.write_all(&[0u8; 10]).await.unwrap();
    sock.flush().await.unwrap();
    let mut committed = false;
    for _ in 0..400 {
        if files(s, dir) == vec![id.to_string()] {
            committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(committed, "{:?}", files(s, dir));
    (sock, tx)
}

/// Waits (up to 10 s) until directory `dir` of the data dir is empty.
async fn emptied(s: &Stack, dir: &str) -> bool {
    for _ in 0..200 {
        if files(s, dir).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    files(s, dir).is_empty()
}

#[tokio::test]
async fn an_upload_dropped_while_it_activates_leaves_no_data_file() {
    // The client hangs up after the data was committed to the store but
    // before the activation's transaction committed: the image goes back
    // to `queued` and the committed file goes too (no quota counts it).
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let id = create_id(
        &c,
        &admin,
        json!({"name": "dropped", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let (sock, tx) = upload_held_at_activation(
        &s,
        &c,
        &admin,
        &id,
        "file",
        "UPDATE image SET revision = revision WHERE id = $1",
    )
    .await;
    drop(sock);
    // Let the server see the hang-up (3 s for a loaded machine, well
    // within the 10 s busy timeout the activation waits for the lock),
    // then let it go on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.rollback().await.unwrap();
    let img = wait_status(&c, &admin, &id, "queued").await;
    assert_eq!(img["size"], Value::Null, "{img}");
    assert!(emptied(&s, "images").await, "{:?}", files(&s, "images"));
}

#[tokio::test]
async fn an_upload_whose_image_was_deleted_meanwhile_is_gone_like_glance() {
    // Glance answers 410 Gone when the image is gone by the time the
    // uploaded data is saved (its stage answers the NotFound, 404), and
    // the data is removed.
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    for (what, dir, status, says) in [
        ("file", "images", "410", "could not be found after upload"),
        ("stage", "staging", "404", "No image found with ID"),
    ] {
        let id = create_id(
            &c,
            &admin,
            json!({"name": "gone", "disk_format": "raw", "container_format": "bare"}),
        )
        .await;
        let (mut sock, tx) =
            upload_held_at_activation(&s, &c, &admin, &id, what, "DELETE FROM image WHERE id = $1")
                .await;
        tx.commit().await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), sock.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {answer}"
        );
        assert!(answer.contains(says), "{what}: {answer}");
        assert!(emptied(&s, dir).await, "{what}: {:?}", files(&s, dir));
    }
}

#[tokio::test]
async fn quotas_limit_image_count_and_bytes_with_413() {
    let s = Stack::start_with(|st| {
        st.image_quota_count = Some(2);
        st.image_quota_bytes = Some(10_000);
    })
    .await;
    let c = s.client();
    let admin = c.admin_token().await;
    let body = json!({"name": "q", "disk_format": "raw", "container_format": "bare"});
    let a = create_id(&c, &admin, body.clone()).await;
    let b = create_id(&c, &admin, body.clone()).await;
    let r = c.post(&format!("{V2}/images"), &admin, body.clone()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("image_count_total"));
    assert_eq!(
        put_data(&c, &admin, &a, "file", &[1u8; 6000]).await.status,
        StatusCode::NO_CONTENT
    );
    let r = put_data(&c, &admin, &b, "file", &[1u8; 6000]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.json());
    assert!(r.json()["message"].as_str().unwrap().contains("quota"));
    assert_eq!(show(&c, &admin, &b).await["status"], "queued");
    assert_eq!(files(&s, "images"), vec![a.clone()]);
    // Within the rest it fits.
    assert_eq!(
        put_data(&c, &admin, &b, "file", &[1u8; 4000]).await.status,
        StatusCode::NO_CONTENT
    );
    // Deleting frees the count.
    c.delete(&format!("{V2}/images/{a}"), &admin).await;
    create(&c, &admin, body).await;
}

/// Opens a PUT of image data with the given framing header and sends
/// `first` bytes of its body (as one chunk when chunked), leaving the
/// request open.
async fn open_put(
    s: &Stack,
    token: &str,
    path: &str,
    framing: &str,
    first: &[u8],
) -> tokio::net::TcpStream {
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: {}\r\nx-auth-token: {token}\r\ncontent-type: application/octet-stream\r\n{framing}\r\nconnection: close\r\n\r\n",
        s.addr
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    send_part(&mut sock, framing.starts_with("transfer-encoding"), first).await;
    sock
}

/// Sends more of a body (`chunked`: as one chunk).
async fn send_part(sock: &mut tokio::net::TcpStream, chunked: bool, data: &[u8]) {
    if chunked {
        sock.write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .await
            .unwrap();
    }
    sock.write_all(data).await.unwrap();
    if chunked {
        sock.write_all(b"\r\n").await.unwrap();
    }
    sock.flush().await.unwrap();
}

/// Reads an HTTP answer to its end (the requests ask to close), for up to
/// 20 s; `None` if none came.
async fn answer_of(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(20), sock.read_to_end(&mut answer)).await {
        Ok(_) if !answer.is_empty() => Some(String::from_utf8_lossy(&answer).into_owned()),
        _ => None,
    }
}

async fn reserved(s: &Stack, id: &str) -> i64 {
    let pool = &s.running.as_ref().unwrap().image.pool;
    let (n,): (i64,) = store::sqlx::query_as("SELECT reserved FROM image WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn deleting_an_image_stops_its_upload_or_stage_and_leaves_nothing() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    for (what, dir, status) in [
        ("file", "images", "saving"),
        ("stage", "staging", "uploading"),
    ] {
        let id = create_id(
            &c,
            &admin,
            json!({"name": "doomed", "disk_format": "raw", "container_format": "bare"}),
        )
        .await;
        // 1 MiB of a declared 64 MiB: the upload is writing a temporary
        // file and waits for the rest.
        let mut sock = open_put(
            &s,
            &admin,
            &format!("{V2}/images/{id}/{what}"),
            &format!("content-length: {}", 64 << 20),
            &vec![0u8; 1 << 20],
        )
        .await;
        wait_status(&c, &admin, &id, status).await;
        assert!(
            eventually(10, || !files(&s, dir).is_empty()).await,
            "{what}: no temporary file"
        );
        let r = c.delete(&format!("{V2}/images/{id}"), &admin).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        // The delete answers once the transfer stopped and its file is gone.
        assert!(files(&s, dir).is_empty(), "{what}: {:?}", files(&s, dir));
        assert!(s.running.as_ref().unwrap().image.transfers.is_empty());
        let answer = answer_of(&mut sock)
            .await
            .unwrap_or_else(|| panic!("{what}: the transfer goes on after the delete"));
        assert!(answer.starts_with("HTTP/1.1 410 "), "{what}: {answer}");
        assert!(files(&s, "images").is_empty());
        assert!(files(&s, "staging").is_empty());
    }
}

#[tokio::test]
async fn a_transfer_without_a_declared_size_reserves_what_it_receives() {
    // Chunked uploads and stages announce no size: the reservation grows
    // with the data received, so a second transfer is refused (413) as
    // soon as both together pass the quota, before its body has ended.
    let s = Stack::start_with(|st| st.image_quota_bytes = Some(4 << 20)).await;
    let c = s.client();
    let admin = c.admin_token().await;
    let body = json!({"name": "q", "disk_format": "raw", "container_format": "bare"});
    for what in ["file", "stage"] {
        let a = create_id(&c, &admin, body.clone()).await;
        let b = create_id(&c, &admin, body.clone()).await;
        let chunked = "transfer-encoding: chunked";
        let path = |id: &str| format!("{V2}/images/{id}/{what}");
        let mut sa = open_put(&s, &admin, &path(&a), chunked, &vec![0u8; 1 << 20]).await;
        for _ in 0..2 {
            send_part(&mut sa, true, &vec![0u8; 1 << 20]).await;
        }
        let mut grown = false;
        for _ in 0..400 {
            if reserved(&s, &a).await >= 3 << 20 {
                grown = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(grown, "{what}: reserved {}", reserved(&s, &a).await);
        // 2 MiB more do not fit next to the 3 MiB received: refused
        // while the body is still open.
        let mut sb = open_put(&s, &admin, &path(&b), chunked, &vec![0u8; 1 << 20]).await;
        let (mut rb, mut wb) = sb.split();
        let more = async {
            let _ = wb.write_all(b"100000\r\n").await;
            let _ = wb.write_all(&vec![0u8; 1 << 20]).await;
            let _ = wb.write_all(b"\r\n").await;
        };
        let read = async {
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(20), rb.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).into_owned()
        };
        let ((), answer) = tokio::join!(more, read);
        assert!(answer.starts_with("HTTP/1.1 413 "), "{what}: {answer}");
        assert!(answer.contains("quota"), "{what}: {answer}");
        drop(sb);
        // The first completes.
        sa.write_all(b"0\r\n\r\n").await.unwrap();
        let answer = answer_of(&mut sa).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 204 "), "{what}: {answer}");
        let img = show(&c, &admin, &b).await;
        assert_eq!(img["status"], "queued", "{what}: {img}");
        assert_eq!(reserved(&s, &b).await, 0);
        for id in [&a, &b] {
            c.delete(&format!("{V2}/images/{id}"), &admin).await;
        }
    }
}

#[tokio::test]
async fn a_web_download_reserves_the_size_its_source_announces() {
    let s = Stack::start_with(|st| {
        st.image_import_allow_loopback = true;
        st.image_quota_bytes = Some(4 << 20);
    })
    .await;
    let c = s.client();
    let admin = c.admin_token().await;
    let body = json!({"name": "web", "disk_format": "raw", "container_format": "bare"});
    // Announces 3 MiB, sends a byte every 100 ms.
    let src = Trickle::start(3 << 20, Some(Duration::from_millis(100))).await;
    let id = create_id(&c, &admin, body.clone()).await;
    let r = import(
        &c,
        &admin,
        &id,
        json!({"name": "web-download", "uri": src.url()}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let mut held = false;
    for _ in 0..400 {
        if reserved(&s, &id).await == 3 << 20 {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(held, "reserved {}", reserved(&s, &id).await);
    // The rest of the quota is 1 MiB: 2 MiB do not fit.
    let other = create_id(&c, &admin, body).await;
    let r = put_data(&c, &admin, &other, "file", &vec![0u8; 2 << 20]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.json());
    let r = c.delete(&format!("{V2}/images/{id}"), &admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
}

#[tokio::test]
async fn a_cut_or_refused_upload_gives_its_reservation_back() {
    // Quota 3000: a declared 3000-byte upload cut halfway, a chunked one
    // cut after 2000 bytes, then one the inspector refuses: 3000 bytes
    // still fit.
    let s = Stack::start_with(|st| st.image_quota_bytes = Some(3000)).await;
    let c = s.client();
    let admin = c.admin_token().await;
    let raw = json!({"name": "q", "disk_format": "raw", "container_format": "bare"});
    let cut = create_id(&c, &admin, raw.clone()).await;
    cut_upload(&s, &admin, &format!("{V2}/images/{cut}/file"), 3000, 1500).await;
    wait_status(&c, &admin, &cut, "queued").await;
    // A chunked one, cut once its reservation grew to what it received.
    let chunked = create_id(&c, &admin, raw.clone()).await;
    let sock = open_put(
        &s,
        &admin,
        &format!("{V2}/images/{chunked}/file"),
        "transfer-encoding: chunked",
        &[0u8; 2000],
    )
    .await;
    let mut grown = false;
    for _ in 0..400 {
        if reserved(&s, &chunked).await == 2000 {
            grown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(grown, "reserved {}", reserved(&s, &chunked).await);
    drop(sock);
    wait_status(&c, &admin, &chunked, "queued").await;
    assert_eq!(reserved(&s, &chunked).await, 0);
    let bad = create_id(
        &c,
        &admin,
        json!({"name": "bad", "disk_format": "qcow2", "container_format": "bare"}),
    )
    .await;
    let r = put_data(&c, &admin, &bad, "file", &[0u8; 3000]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.json());
    assert_eq!(show(&c, &admin, &bad).await["status"], "queued");
    let good = create_id(&c, &admin, raw).await;
    let r = put_data(&c, &admin, &good, "file", &[0u8; 3000]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.json());
    assert_eq!(show(&c, &admin, &good).await["status"], "active");
}

#[tokio::test]
async fn a_restart_sweeps_temporary_files_and_unsticks_saving_images() {
    let mut s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let id = create_id(
        &c,
        &admin,
        json!({"name": "r", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let body = json!({"name": "s", "disk_format": "raw", "container_format": "bare"});
    let staged = create_id(&c, &admin, body.clone()).await;
    let imp = create_id(&c, &admin, body).await;
    // As if the process died mid-upload, mid-stage and mid-import.
    sqlx_set_status(&s, &id, "saving").await;
    sqlx_set_status(&s, &staged, "uploading").await;
    sqlx_set_status(&s, &imp, "importing").await;
    std::fs::write(s.data_dir().join("images/.tmp-leftover"), b"partial").unwrap();
    std::fs::write(s.data_dir().join("staging/.tmp-leftover"), b"partial").unwrap();
    s.restart().await;
    let admin = c.admin_token().await;
    assert_eq!(show(&c, &admin, &id).await["status"], "queued");
    assert_eq!(show(&c, &admin, &staged).await["status"], "queued");
    let i = show(&c, &admin, &imp).await;
    assert_eq!(i["status"], "queued");
    assert_eq!(i["os_glance_failed_import"], "file");
    assert!(files(&s, "images").is_empty());
    assert!(files(&s, "staging").is_empty());
}

async fn sqlx_set_status(s: &Stack, id: &str, status: &str) {
    let pool = &s.running.as_ref().unwrap().image.pool;
    store::sqlx::query("UPDATE image SET status = $1 WHERE id = $2")
        .bind(status)
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

// ----- schemas and errors --------------------------------------------------------

#[tokio::test]
async fn schemas_and_error_bodies_are_glances() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    let sc = c.get(&format!("{V2}/schemas/image"), &admin).await;
    assert_eq!(sc.status, StatusCode::OK);
    assert_eq!(sc.body["name"], "image");
    assert_eq!(sc.body["additionalProperties"]["type"], "string");
    assert!(sc.body["properties"]["disk_format"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("qcow2")));
    let sc = c.get(&format!("{V2}/schemas/images"), &admin).await;
    assert_eq!(sc.body["properties"]["images"]["items"]["name"], "image");
    assert_eq!(
        c.get(&format!("{V2}/schemas/member"), &admin).await.status,
        StatusCode::OK
    );
    assert_eq!(
        c.get(&format!("{V2}/schemas/members"), &admin).await.status,
        StatusCode::OK
    );
    // No path answers 500, whatever the id looks like.
    for path in [
        "/images/nope",
        "/images/..%2F..%2Fetc%2Fpasswd",
        "/images/00000000-0000-0000-0000-000000000000",
        "/images/00000000-0000-0000-0000-000000000000/file",
        "/images/00000000-0000-0000-0000-000000000000/members",
        "/images/00000000-0000-0000-0000-000000000000/tasks",
        "/nothing",
    ] {
        let r = c.get(&format!("{V2}{path}"), &admin).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
        assert_eq!(r.body["code"], "404 Not Found", "{path}");
        assert_eq!(r.body["title"], "Not Found");
    }
    let r = c
        .call(
            Method::DELETE,
            &format!("{V2}/images"),
            Some(&admin),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["code"], "405 Method Not Allowed");
}

// ----- atomic writes and quotas under concurrency (issue 10) -----------------

#[tokio::test]
async fn concurrent_tag_adds_and_property_patches_all_survive() {
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    for round in 0..5 {
        let id = create_id(&c, &admin, json!({"name": format!("t{round}")})).await;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..16 {
            let (c, admin, id) = (c.clone(), admin.clone(), id.clone());
            set.spawn(async move {
                c.put(&format!("{V2}/images/{id}/tags/tag-{i}"), &admin)
                    .await
                    .status
            });
        }
        for i in 0..8 {
            let (c, admin, id) = (c.clone(), admin.clone(), id.clone());
            set.spawn(async move {
                patch(
                    &c,
                    &admin,
                    &id,
                    json!([{"op": "add", "path": format!("/prop_{i}"), "value": "v"}]),
                )
                .await
                .status
            });
        }
        while let Some(status) = set.join_next().await {
            let status = status.unwrap();
            assert!(status.is_success(), "round {round}: {status}");
        }
        let img = show(&c, &admin, &id).await;
        let tags: Vec<String> = img["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        assert_eq!(tags.len(), 16, "round {round}: {tags:?}");
        for i in 0..8 {
            assert_eq!(img[format!("prop_{i}")], "v", "round {round}: {img}");
        }
    }
}

#[tokio::test]
async fn a_disk_format_change_racing_an_upload_cannot_outlive_the_inspection() {
    // The data is inspected against the disk_format read in the same
    // transaction that moves the image to `saving`; a PATCH of the format
    // either lands before (and the upload is inspected against it) or is
    // refused. It can never relabel data inspected as another format.
    let dir = tempfile::tempdir().unwrap();
    let data = make(dir.path(), "r.qcow2", "qcow2", "1M", &[]);
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    for round in 0..30 {
        let id = create_id(
            &c,
            &admin,
            json!({"name": format!("r{round}"), "disk_format": "qcow2", "container_format": "bare"}),
        )
        .await;
        let relabel = patch(
            &c,
            &admin,
            &id,
            json!([{"op": "replace", "path": "/disk_format", "value": "raw"}]),
        );
        let upload = put_data(&c, &admin, &id, "file", &data);
        let (relabel, upload) = tokio::join!(relabel, upload);
        assert!(
            [StatusCode::OK, StatusCode::FORBIDDEN, StatusCode::CONFLICT].contains(&relabel.status),
            "round {round}: {:?}",
            relabel.json()
        );
        assert!(
            [
                StatusCode::NO_CONTENT,
                StatusCode::BAD_REQUEST,
                StatusCode::CONFLICT
            ]
            .contains(&upload.status),
            "round {round}: {:?}",
            upload.json()
        );
        let img = show(&c, &admin, &id).await;
        assert!(
            !(relabel.status == StatusCode::OK && upload.status == StatusCode::NO_CONTENT),
            "round {round}: both the relabel and the upload succeeded: {img}"
        );
        if img["status"] == "active" {
            assert_eq!(img["disk_format"], "qcow2", "round {round}: {img}");
        } else {
            assert_eq!(img["status"], "queued", "round {round}: {img}");
        }
    }
}

/// A PUT of `data` with a chunked body (no size announced, so nothing can
/// be reserved up front); returns the status and the body.
async fn chunked_put(
    addr: std::net::SocketAddr,
    token: &str,
    path: &str,
    data: &[u8],
) -> (u16, String) {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: {}\r\nx-auth-token: {token}\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n",
        addr,
        data.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(data).await.unwrap();
    sock.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[tokio::test]
async fn a_delete_racing_a_protect_never_deletes_a_protected_image() {
    // The delete checks `protected` on the row its transaction locked: a
    // PATCH that protected the image either lands first (the delete is
    // refused) or finds the image gone (404). Never both 200 and 204.
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    for round in 0..30 {
        let id = create_id(&c, &admin, json!({"name": format!("p{round}")})).await;
        let protect = patch(
            &c,
            &admin,
            &id,
            json!([{"op": "replace", "path": "/protected", "value": true}]),
        );
        let path = format!("{V2}/images/{id}");
        let delete = c.delete(&path, &admin);
        let (protect, delete) = tokio::join!(protect, delete);
        match (protect.status, delete.status) {
            (StatusCode::OK, StatusCode::FORBIDDEN) => {
                assert_eq!(show(&c, &admin, &id).await["protected"], true);
            }
            (StatusCode::NOT_FOUND, StatusCode::NO_CONTENT) => {}
            other => panic!(
                "round {round}: {other:?} {:?} {}",
                protect.json(),
                delete.body
            ),
        }
    }
}

#[tokio::test]
async fn parallel_uploads_cannot_share_out_the_same_byte_quota() {
    // 10 uploads of 1000 bytes against 3000 bytes left: exactly 3 fit,
    // whether the size is announced (reserved when the upload starts) or
    // not (reserved as it arrives, and checked when it completes), for
    // direct uploads and staging.
    let s = Stack::start_with(|st| st.image_quota_bytes = Some(3000)).await;
    let c = s.client();
    let admin = c.admin_token().await;
    let body = json!({"name": "q", "disk_format": "raw", "container_format": "bare"});
    for round in 0..8 {
        let what = if round % 4 < 2 { "file" } else { "stage" };
        let chunked = round % 2 == 1;
        let mut ids = Vec::new();
        for _ in 0..10 {
            ids.push(create_id(&c, &admin, body.clone()).await);
        }
        let mut set = tokio::task::JoinSet::new();
        for id in &ids {
            let (c, admin, id) = (c.clone(), admin.clone(), id.clone());
            let path = format!("{V2}/images/{id}/{what}");
            let addr = s.addr;
            set.spawn(async move {
                if chunked {
                    chunked_put(addr, &admin, &path, &[7u8; 1000]).await
                } else {
                    let r = put_data(&c, &admin, &id, what, &[7u8; 1000]).await;
                    (r.status.as_u16(), format!("{:?}", r.json()))
                }
            });
        }
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            let (status, answer) = r.unwrap();
            match status {
                204 => ok += 1,
                413 => assert!(answer.contains("quota"), "{answer}"),
                other => panic!("round {round} ({what}, chunked {chunked}): {other} {answer}"),
            }
        }
        let dir = if what == "file" { "images" } else { "staging" };
        assert_eq!(ok, 3, "round {round} ({what}, chunked {chunked})");
        assert_eq!(
            files(&s, dir).len(),
            3,
            "round {round}: {:?}",
            files(&s, dir)
        );
        for id in &ids {
            let r = c.delete(&format!("{V2}/images/{id}"), &admin).await;
            assert_eq!(r.status, StatusCode::NO_CONTENT);
        }
    }
}

#[tokio::test]
async fn parallel_creates_cannot_exceed_the_image_count_quota() {
    let s = Stack::start_with(|st| st.image_quota_count = Some(3)).await;
    let c = s.client();
    let admin = c.admin_token().await;
    for round in 0..4 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..10 {
            let (c, admin) = (c.clone(), admin.clone());
            set.spawn(async move {
                c.post(
                    &format!("{V2}/images"),
                    &admin,
                    json!({"name": format!("n{i}")}),
                )
                .await
            });
        }
        let mut created = Vec::new();
        while let Some(r) = set.join_next().await {
            let r = r.unwrap();
            match r.status {
                StatusCode::CREATED => created.push(r.body["id"].as_str().unwrap().to_string()),
                StatusCode::PAYLOAD_TOO_LARGE => {}
                other => panic!("round {round}: {other} {}", r.body),
            }
        }
        assert_eq!(created.len(), 3, "round {round}");
        for id in &created {
            c.delete(&format!("{V2}/images/{id}"), &admin).await;
        }
    }
}

#[tokio::test]
async fn parallel_member_adds_cannot_exceed_the_member_quota() {
    // image_member_quota is 128 by default: 140 parallel adds, 128 land.
    let s = Stack::start().await;
    let c = s.client();
    let admin = c.admin_token().await;
    for round in 0..2 {
        let id = create_id(
            &c,
            &admin,
            json!({"name": format!("m{round}"), "visibility": "shared"}),
        )
        .await;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..140 {
            let (c, admin, id) = (c.clone(), admin.clone(), id.clone());
            set.spawn(async move {
                c.post(
                    &format!("{V2}/images/{id}/members"),
                    &admin,
                    json!({"member": format!("project-{i}")}),
                )
                .await
            });
        }
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            let r = r.unwrap();
            match r.status {
                StatusCode::OK => ok += 1,
                StatusCode::PAYLOAD_TOO_LARGE => {}
                other => panic!("round {round}: {other} {}", r.body),
            }
        }
        assert_eq!(ok, 128, "round {round}");
        let list = c.get(&format!("{V2}/images/{id}/members"), &admin).await;
        assert_eq!(list.body["members"].as_array().unwrap().len(), 128);
    }
}

// ----- slow import sources (issue 10) ----------------------------------------

/// A web-download source that answers every GET with headers announcing
/// `len` bytes, then sends one byte every `every` (nothing at all when
/// `None`). It counts the connections it accepted and those the importer
/// closed.
struct Trickle {
    addr: std::net::SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

impl Trickle {
    async fn start(len: usize, every: Option<Duration>) -> Trickle {
        use std::sync::atomic::Ordering;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (a, cl) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let cl = cl.clone();
                tokio::spawn(async move {
                    let (mut r, mut w) = sock.into_split();
                    let mut buf = vec![0u8; 4096];
                    let _ = r.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
                    );
                    if w.write_all(head.as_bytes()).await.is_err() {
                        cl.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let send = async {
                        for _ in 0..len {
                            match every {
                                Some(d) => tokio::time::sleep(d).await,
                                None => std::future::pending::<()>().await,
                            }
                            if w.write_all(&[0u8]).await.is_err() {
                                return;
                            }
                        }
                        std::future::pending::<()>().await
                    };
                    // The importer closing its end ends the read.
                    let closed =
                        async { while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {} };
                    tokio::select! {
                        _ = send => {}
                        _ = closed => {}
                    }
                    cl.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Trickle {
            addr,
            accepted,
            closed,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/image", self.addr)
    }
    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Polls `cond` every 50 ms for up to `secs` seconds.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 20 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

async fn task_status(c: &Client, tok: &str, id: &str) -> String {
    let t = c.get(&format!("{V2}/images/{id}/tasks"), tok).await;
    t.body["tasks"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_trickling_web_download_fails_at_the_total_time_limit() {
    // One byte every 300 ms never trips the idle limit; the total limit
    // ends the import, records the failure as Glance does and closes the
    // connection to the source.
    let s = Stack::start_with(|st| {
        st.image_import_allow_loopback = true;
        st.image_import_limits.idle_timeout = Duration::from_secs(2);
        st.image_import_limits.total_timeout = Duration::from_secs(3);
    })
    .await;
    let c = s.client();
    let admin = c.admin_token().await;
    let src = Trickle::start(100_000, Some(Duration::from_millis(300))).await;
    let id = create_id(
        &c,
        &admin,
        json!({"name": "slow", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let started = std::time::Instant::now();
    let r = import(
        &c,
        &admin,
        &id,
        json!({"name": "web-download", "uri": src.url()}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let img = wait_status(&c, &admin, &id, "queued").await;
    // The limit is counted from the import's start, which is after
    // `started`; the upper bound leaves room for a loaded machine.
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(img["os_glance_failed_import"], "file", "{img}");
    assert_eq!(img["os_glance_importing_to_stores"], "", "{img}");
    assert_eq!(task_status(&c, &admin, &id).await, "failure");
    let msg = task_message(&c, &admin, &id).await;
    assert!(msg.contains("time limit"), "{msg}");
    assert!(
        eventually(10, || src.closed() == 1).await,
        "the source connection stays open"
    );
    assert!(files(&s, "images").is_empty(), "{:?}", files(&s, "images"));
    // The task removes its entry just after the image is back in `queued`.
    let imports = &s.running.as_ref().unwrap().image.imports;
    assert!(
        eventually(10, || imports.is_empty()).await,
        "the import is still tracked"
    );
}

#[tokio::test]
async fn a_stalled_web_download_fails_at_the_idle_limit_and_imports_wait_for_a_slot() {
    // A source that sends its headers and then nothing fails at the idle
    // limit. With one import slot, a second import waits (task `pending`,
    // no connection made) until the first has ended.
    let s = Stack::start_with(|st| {
        st.image_import_allow_loopback = true;
        st.image_import_limits.idle_timeout = Duration::from_secs(3);
        st.image_import_limits.total_timeout = Duration::from_secs(60);
        st.image_import_limits.max_concurrent = 1;
    })
    .await;
    let c = s.client();
    let admin = c.admin_token().await;
    let src = Trickle::start(1000, None).await;
    let body = json!({"name": "stalled", "disk_format": "raw", "container_format": "bare"});
    let first = create_id(&c, &admin, body.clone()).await;
    let second = create_id(&c, &admin, body).await;
    for id in [&first, &second] {
        let r = import(
            &c,
            &admin,
            id,
            json!({"name": "web-download", "uri": src.url()}),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    }
    assert!(eventually(10, || src.accepted() >= 1).await);
    // While the first holds the only slot, the second has not connected
    // and its task is `pending`. The first leaves `importing` (for
    // `queued`) before it frees its slot, so whatever was read before a
    // read that still finds the first importing was read while the first
    // held the slot: each sample reads the second's state first, then
    // the first's status. This holds however slow the machine is; the
    // first stays importing for the whole idle limit after it connected,
    // so the first sample finds it importing.
    //
    // Which import got the slot is up to the scheduler: the one whose
    // task left `pending` (it connected, so it runs for the idle limit).
    let (first, second) = if task_status(&c, &admin, &first).await == "pending" {
        (&second, &first)
    } else {
        (&first, &second)
    };
    assert_eq!(task_status(&c, &admin, second).await, "pending");
    let mut held = 0;
    loop {
        let accepted = src.accepted();
        let second_task = task_status(&c, &admin, second).await;
        let second_status = show(&c, &admin, second).await["status"].clone();
        let first_status = show(&c, &admin, first).await["status"].clone();
        if first_status != "importing" {
            break;
        }
        held += 1;
        assert_eq!(
            accepted, 1,
            "the second import connected while the first ran"
        );
        assert_eq!(second_task, "pending");
        assert_eq!(second_status, "importing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        held >= 1,
        "the first import was never seen holding its slot"
    );
    for id in [&first, &second] {
        let img = wait_status(&c, &admin, id, "queued").await;
        assert_eq!(img["os_glance_failed_import"], "file", "{img}");
        let msg = task_message(&c, &admin, id).await;
        assert!(msg.contains("no data"), "{msg}");
    }
    assert_eq!(src.accepted(), 2);
    assert!(eventually(10, || src.closed() == 2).await);
    assert!(files(&s, "images").is_empty(), "{:?}", files(&s, "images"));
}

#[tokio::test]
async fn deleting_an_importing_image_cancels_its_import_and_leaves_nothing() {
    let s = Stack::start_with(|st| st.image_import_allow_loopback = true).await;
    let c = s.client();
    let admin = c.admin_token().await;
    let src = Trickle::start(100_000, Some(Duration::from_millis(100))).await;
    let id = create_id(
        &c,
        &admin,
        json!({"name": "doomed", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let r = import(
        &c,
        &admin,
        &id,
        json!({"name": "web-download", "uri": src.url()}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert!(eventually(10, || src.accepted() == 1).await);
    // Some data is on its way into a temporary file.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(show(&c, &admin, &id).await["status"], "importing");
    let r = c.delete(&format!("{V2}/images/{id}"), &admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(
        c.get(&format!("{V2}/images/{id}"), &admin).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        eventually(10, || src.closed() == 1).await,
        "the import still reads from its source after the delete"
    );
    assert!(s.running.as_ref().unwrap().image.imports.is_empty());
    assert!(files(&s, "images").is_empty(), "{:?}", files(&s, "images"));
    assert!(
        files(&s, "staging").is_empty(),
        "{:?}",
        files(&s, "staging")
    );
}
