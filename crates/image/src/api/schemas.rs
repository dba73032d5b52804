//! `/v2/schemas/*`: the JSON schemas clients read to learn the image
//! attributes, in the shape of Glance's `etc/schema-image.json` plus the
//! core attributes Glance adds in `glance/api/v2/images.py`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::{reply, S};
use crate::app::{CONTAINER_FORMATS, DISK_FORMATS, VISIBILITIES};

fn nullable_string(description: &str, max: Option<u64>) -> Value {
    let mut v = json!({"type": ["null", "string"], "description": description});
    if let Some(m) = max {
        v["maxLength"] = json!(m);
    }
    v
}

/// The image schema.
pub fn image_schema() -> Value {
    let mut containers: Vec<Value> = vec![Value::Null];
    containers.extend(CONTAINER_FORMATS.iter().map(|c| json!(c)));
    let mut disks: Vec<Value> = vec![Value::Null];
    disks.extend(DISK_FORMATS.iter().map(|c| json!(c)));
    let ro = |d: &str, t: Value| {
        let mut v = json!({"description": d, "readOnly": true});
        v["type"] = t;
        v
    };
    json!({
        "name": "image",
        "additionalProperties": {"type": "string"},
        "links": [
            {"href": "{self}", "rel": "self"},
            {"href": "{file}", "rel": "enclosure"},
            {"href": "{schema}", "rel": "describedby"}
        ],
        "properties": {
            "id": {"type": "string", "description": "An identifier for the image", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
            "name": nullable_string("Descriptive name for the image", Some(255)),
            "status": {"type": "string", "readOnly": true, "description": "Status of the image", "enum": ["queued", "saving", "active", "killed", "deleted", "uploading", "importing", "pending_delete", "deactivated"]},
            "visibility": {"type": "string", "description": "Scope of image accessibility", "enum": VISIBILITIES},
            "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
            "os_hidden": {"type": "boolean", "description": "If true, image will not appear in default image list response."},
            "checksum": ro("md5 hash of image contents.", json!(["null", "string"])),
            "os_hash_algo": ro("Algorithm to calculate the os_hash_value", json!(["null", "string"])),
            "os_hash_value": ro("Hexdigest of the image contents using the algorithm specified by the os_hash_algo", json!(["null", "string"])),
            "owner": nullable_string("Owner of the image", Some(255)),
            "size": ro("Size of image file in bytes", json!(["null", "integer"])),
            "virtual_size": ro("Virtual size of image in bytes", json!(["null", "integer"])),
            "container_format": {"type": ["null", "string"], "description": "Format of the container", "enum": containers},
            "disk_format": {"type": ["null", "string"], "description": "Format of the disk", "enum": disks},
            "created_at": ro("Date and time of image registration", json!("string")),
            "updated_at": ro("Date and time of the last image modification", json!("string")),
            "tags": {"type": "array", "description": "List of strings related to the image", "items": {"type": "string", "maxLength": 255}},
            "direct_url": ro("URL to access the image file kept in external store", json!("string")),
            "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
            "min_disk": {"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
            "self": ro("An image self url", json!("string")),
            "file": ro("An image file url", json!("string")),
            "stores": ro("Store in which image data resides.  Only present when the operator has enabled multiple stores.", json!("string")),
            "schema": ro("An image schema url", json!("string")),
            "locations": {"type": "array", "description": "A set of URLs to access the image file kept in external store", "items": {"type": "object"}},
            "os_glance_import_task": ro("The id of the last import task of this image", json!("string")),
            "os_glance_importing_to_stores": ro("Stores the image is being imported to", json!("string")),
            "os_glance_failed_import": ro("Stores an import of this image failed for", json!("string")),
            "architecture": {"type": "string", "description": "Operating system architecture as specified in https://docs.openstack.org/python-glanceclient/latest/cli/property-keys.html", "is_base": false},
            "instance_uuid": {"type": "string", "description": "Metadata which can be used to record which instance this image is associated with. (Informational only, does not create an instance snapshot.)", "is_base": false},
            "kernel_id": {"type": ["null", "string"], "description": "ID of image stored in Glance that should be used as the kernel when booting an AMI-style image.", "is_base": false},
            "ramdisk_id": {"type": ["null", "string"], "description": "ID of image stored in Glance that should be used as the ramdisk when booting an AMI-style image.", "is_base": false},
            "os_distro": {"type": "string", "description": "Common name of operating system distribution as specified in https://docs.openstack.org/python-glanceclient/latest/cli/property-keys.html", "is_base": false},
            "os_version": {"type": "string", "description": "Operating system version as specified by the distributor.", "is_base": false}
        }
    })
}

pub async fn image(State(_s): S) -> Response {
    reply(StatusCode::OK, image_schema())
}

pub async fn images(State(_s): S) -> Response {
    reply(
        StatusCode::OK,
        json!({
            "name": "images",
            "properties": {
                "images": {"type": "array", "items": image_schema()},
                "schema": {"type": "string"},
                "first": {"type": "string"},
                "next": {"type": "string"}
            },
            "links": [
                {"href": "{first}", "rel": "first"},
                {"href": "{next}", "rel": "next"},
                {"href": "{schema}", "rel": "describedby"}
            ]
        }),
    )
}

fn member_schema() -> Value {
    json!({
        "name": "member",
        "properties": {
            "created_at": {"type": "string", "description": "Date and time of image member creation"},
            "image_id": {"type": "string", "description": "An identifier for the image", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
            "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
            "status": {"type": "string", "description": "The status of this image member", "enum": ["pending", "accepted", "rejected"]},
            "updated_at": {"type": "string", "description": "Date and time of last modification of image member"},
            "schema": {"type": "string", "readOnly": true}
        }
    })
}

pub async fn member(State(_s): S) -> Response {
    reply(StatusCode::OK, member_schema())
}

pub async fn members(State(_s): S) -> Response {
    reply(
        StatusCode::OK,
        json!({
            "name": "members",
            "properties": {
                "members": {"type": "array", "items": member_schema()},
                "schema": {"type": "string"}
            },
            "links": [{"href": "{schema}", "rel": "describedby"}]
        }),
    )
}
