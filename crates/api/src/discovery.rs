//! Version discovery documents, in the shapes keystoneauth and openstacksdk
//! accept: `{"versions": {"values": [...]}}`, `{"versions": [...]}` and
//! `{"version": {...}}`.

use serde_json::{json, Value};

/// One API version of a service.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    /// e.g. `v3.14`, `v2.1`, `v2.0`.
    pub id: &'static str,
    pub status: &'static str,
    pub updated: &'static str,
    /// The versioned root, e.g. `http://host/identity/v3/`.
    pub href: String,
    /// Media type, e.g. `application/vnd.openstack.identity-v3+json`.
    pub media_type: &'static str,
    /// Microversion range, when the service has one.
    pub min_version: Option<&'static str>,
    pub max_version: Option<&'static str>,
}

impl VersionInfo {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "status": self.status,
            "updated": self.updated,
            "links": [{"rel": "self", "href": self.href}],
            "media-types": [{"base": "application/json", "type": self.media_type}],
        });
        if let (Some(min), Some(max)) = (self.min_version, self.max_version) {
            v["min_version"] = json!(min);
            v["version"] = json!(max);
        }
        v
    }
}
