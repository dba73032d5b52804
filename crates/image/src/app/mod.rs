//! Image logic: the service object, who sees and who lists which image,
//! the records' writes and quotas in [`image`], and the status machine and
//! data paths (upload, staging, import) in [`data`]. Handlers in
//! `crate::api` parse and call into here; SQL is in `crate::store`.
//!
//! Status machine (Glance's):
//!
//! ```text
//!  queued ──PUT file──▶ saving ──ok──▶ active ◀──reactivate── deactivated
//!    │ ▲                  │                 └──deactivate──▶
//!    │ └──failed/cut──────┘
//!    ├──PUT stage──▶ uploading ──POST import (glance-direct)──▶ importing ──ok──▶ active
//!    └──POST import (web-download)──────────────────────────────▶ importing
//!                      importing ──failed──▶ queued (os_glance_failed_import=file)
//! ```

pub mod addr;
pub mod data;
pub mod fetch;
pub mod image;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::{AuthContext, Error, Target};
use store::Pool;

use crate::blob::{FileStore, ImageStore};
use crate::store as db;
use crate::store::image::ImageRow;

/// Settings of the image service (Glance's option names in comments).
#[derive(Debug, Clone)]
pub struct Config {
    /// The externally reachable base URL, e.g. `http://10.0.0.5:5000`.
    pub public_url: String,
    /// Where `images/` (the file store) and `staging/` live.
    pub data_dir: PathBuf,
    /// Images a project may own (`image_count_total`); `None`: unlimited.
    pub quota_image_count: Option<u64>,
    /// Bytes of image data a project may store (`image_size_total`, which
    /// Glance counts in MiB; bytes here); `None`: unlimited.
    pub quota_image_bytes: Option<u64>,
    /// Largest single image (`[DEFAULT] image_size_cap`, 1 TiB).
    pub image_size_cap: u64,
    /// `image_property_quota`, `image_tag_quota`, `image_member_quota`.
    pub property_quota: usize,
    pub tag_quota: usize,
    pub member_quota: usize,
    /// Lets `web-download` fetch from loopback addresses. For tests, which
    /// serve images from a server on 127.0.0.1; never on in production.
    pub import_allow_loopback: bool,
    /// DER certificates `web-download` trusts for https besides the
    /// Mozilla root store built in (`webpki-roots`). For tests, which serve
    /// https from 127.0.0.1 with a certificate they make; empty in
    /// production.
    pub import_extra_root_certs: Vec<Vec<u8>>,
    /// Bounds on interoperable imports.
    pub import_limits: ImportLimits,
    /// The policy with an operator's overrides applied; `None`: the
    /// defaults of `crate::policy`. Taken by [`Images::new`].
    pub policy: Option<api::Enforcer>,
}

/// Bounds on interoperable imports, so that slow or many sources cannot
/// pin the controller's connections, threads and disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportLimits {
    /// A `web-download` source that sends no data for this long fails the
    /// import.
    pub idle_timeout: Duration,
    /// An import that runs longer than this fails (time spent waiting for
    /// a slot does not count).
    pub total_timeout: Duration,
    /// Imports that run at once. More are accepted and wait for a slot
    /// with their task `pending`, as Glance's task executor queues tasks
    /// beyond its `max_workers`.
    pub max_concurrent: usize,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            idle_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(6 * 3600),
            max_concurrent: 4,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            public_url: "http://127.0.0.1:5000".into(),
            data_dir: PathBuf::from("/var/lib/ferrostack"),
            quota_image_count: None,
            quota_image_bytes: None,
            image_size_cap: 1 << 40,
            property_quota: 128,
            tag_quota: 128,
            member_quota: 128,
            import_allow_loopback: false,
            import_extra_root_certs: Vec::new(),
            import_limits: ImportLimits::default(),
            policy: None,
        }
    }
}

/// The image service.
pub struct Images {
    pub pool: Pool,
    pub cfg: Config,
    pub policy: api::Enforcer,
    /// Where active images' data lives.
    pub store: Arc<dyn ImageStore>,
    /// The import staging area (`staging/<id>`): always local files.
    pub staging: FileStore,
    /// The `web-download` fetcher (address guard setting, TLS client).
    pub fetcher: fetch::Fetcher,
    /// The imports running or waiting for a slot, by image.
    pub imports: data::Imports,
    /// The uploads and stages in progress, by image.
    pub transfers: data::Transfers,
}

/// An image with its properties and tags.
#[derive(Debug, Clone)]
pub struct Image {
    pub row: ImageRow,
    pub properties: BTreeMap<String, String>,
    pub tags: BTreeSet<String>,
}

/// Attributes Glance computes or reserves: a request that sets one is
/// refused (403), as Glance refuses it.
pub const READ_ONLY: &[&str] = &[
    "id",
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
    "stores",
];
/// Reserved names (403 "Attribute 'x' is reserved.").
pub const RESERVED: &[&str] = &["deleted", "deleted_at", "location", "locations"];

pub const DISK_FORMATS: &[&str] = &[
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];
pub const CONTAINER_FORMATS: &[&str] = &[
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];
pub const VISIBILITIES: &[&str] = &["public", "private", "shared", "community"];

impl Images {
    /// Builds the service: opens the file store and the staging area
    /// (sweeping temporary files a crash left behind) and builds the
    /// `web-download` TLS client (an unusable extra root is an error).
    pub fn new(pool: Pool, mut cfg: Config) -> std::io::Result<Arc<Images>> {
        let store = FileStore::open(cfg.data_dir.join("images"))?;
        let staging = FileStore::open(cfg.data_dir.join("staging"))?;
        let fetcher = fetch::Fetcher::new(cfg.import_allow_loopback, &cfg.import_extra_root_certs)
            .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
        let policy = cfg.policy.take().unwrap_or_else(crate::policy::enforcer);
        Ok(Arc::new(Images {
            pool,
            policy,
            store: Arc::new(store),
            staging,
            fetcher,
            imports: data::Imports::new(cfg.import_limits.max_concurrent),
            transfers: data::Transfers::default(),
            cfg,
        }))
    }

    /// Puts back what a crash interrupted: images left `saving` (or
    /// `uploading` without staged data) go back to `queued` (their
    /// temporary files were swept when the store opened), imports left
    /// `importing` fail.
    pub async fn recover(&self) -> Result<(), Error> {
        for row in db::image::all(&self.pool).await.map_err(db_err)? {
            match row.status.as_str() {
                "saving" => {
                    db::image::set_status(&self.pool, &row.id, &["saving"], "queued")
                        .await
                        .map_err(db_err)?;
                }
                // Staging interrupted by a crash: its temporary file was
                // swept, so there is nothing to import.
                "uploading" if !self.staging.exists(&row.id) => {
                    db::image::set_status(&self.pool, &row.id, &["uploading"], "queued")
                        .await
                        .map_err(db_err)?;
                }
                "importing" => {
                    let props = db::image::properties(&self.pool, &row.id)
                        .await
                        .map_err(db_err)?;
                    data::import_failed(
                        self,
                        &row.id,
                        props.get("os_glance_import_task").map(String::as_str),
                        "the server restarted during the import",
                    )
                    .await;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A path under the image API, relative as Glance writes its links.
    pub fn href(&self, path: &str) -> String {
        format!("/v2{path}")
    }

    /// The absolute URL of the image endpoint's versions.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/image{}",
            self.cfg.public_url.trim_end_matches('/'),
            path
        )
    }

    /// Loads an image with its properties and tags, or `None`.
    pub async fn load(&self, id: &str) -> Result<Option<Image>, Error> {
        if !is_uuid(id) {
            return Ok(None);
        }
        let Some(row) = db::image::get(&self.pool, id).await.map_err(db_err)? else {
            return Ok(None);
        };
        let properties = db::image::properties(&self.pool, id)
            .await
            .map_err(db_err)?;
        let tags = db::image::tags(&self.pool, id).await.map_err(db_err)?;
        Ok(Some(Image {
            row,
            properties,
            tags,
        }))
    }

    /// The caller's membership of an image, if any.
    pub async fn membership(
        &self,
        ctx: &AuthContext,
        image: &Image,
    ) -> Result<Option<db::member::MemberRow>, Error> {
        match ctx.project_id() {
            Some(p) => db::member::get(&self.pool, &image.row.id, p)
                .await
                .map_err(db_err),
            None => Ok(None),
        }
    }

    /// Loads an image the caller may see, 404 otherwise (an image one may
    /// not see does not exist, as far as one can tell), and checks
    /// `get_image`. Returns the image and its policy target.
    pub async fn visible(&self, ctx: &AuthContext, id: &str) -> Result<(Image, Target), Error> {
        let image = self.load(id).await?.ok_or_else(|| not_found(id))?;
        let member = self.membership(ctx, &image).await?;
        if !sees(ctx, &image.row, member.as_ref()) {
            return Err(not_found(id));
        }
        let target = target(&image.row, member.as_ref());
        self.policy.enforce("get_image", ctx, &target)?;
        Ok((image, target))
    }
}

/// Whether the caller may see the image at all (Glance's visibility rules).
pub fn sees(ctx: &AuthContext, row: &ImageRow, member: Option<&db::member::MemberRow>) -> bool {
    if ctx.is_admin() {
        return true;
    }
    if ctx.project_id().is_some() && ctx.project_id() == row.owner.as_deref() {
        return true;
    }
    match row.visibility.as_str() {
        "public" | "community" => true,
        "shared" => member.is_some(),
        _ => false,
    }
}

/// Whether a list shows the image to the caller (Glance's list rules):
/// `membership` is the caller's member status on it, `visibility` the
/// list's `visibility` filter (`all` or one value), `member_status` its
/// `member_status` filter. Without a filter, community images are listed
/// only to their owner (and admins), shared ones to accepted members.
pub fn listed(
    ctx: &AuthContext,
    row: &ImageRow,
    membership: Option<&str>,
    visibility: Option<&str>,
    member_status: &str,
) -> bool {
    let admin = ctx.is_admin();
    let own = ctx.project_id().is_some() && row.owner.as_deref() == ctx.project_id();
    let member_ok = membership.is_some_and(|s| member_status == "all" || s == member_status);
    match visibility {
        None => match row.visibility.as_str() {
            "public" => true,
            "community" => own || admin,
            "shared" => own || admin || member_ok,
            _ => own || admin,
        },
        Some("all") => match row.visibility.as_str() {
            "public" | "community" => true,
            "shared" => own || admin || member_ok,
            _ => own || admin,
        },
        Some(v) if v != row.visibility => false,
        Some("public") | Some("community") => true,
        Some("shared") => own || member_ok || (admin && membership.is_none()),
        Some(_) => own || admin,
    }
}

/// The policy target of an image for a caller with `member` membership.
pub fn target(row: &ImageRow, member: Option<&db::member::MemberRow>) -> Target {
    let owner = row.owner.clone().unwrap_or_default();
    Target::new()
        .with("project_id", owner.clone())
        .with("owner", owner)
        .with("visibility", row.visibility.clone())
        .with_opt("member_id", member.map(|m| m.member.clone()))
}

/// Glance's 404 for an image.
pub fn not_found(id: &str) -> Error {
    Error::not_found(format!("No image found with ID {id}"))
}

/// Glance answers quota errors with 413.
pub fn over_quota(message: String) -> Error {
    Error::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, message)
}

/// Whether `s` is a UUID in the form Glance accepts (dashed, any case).
pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok() && s.len() == 36
}

/// Maps a store error to an API error.
pub fn db_err(e: db::Error) -> Error {
    match e {
        db::Error::Conflict(_) => Error::conflict("The resource already exists."),
        db::Error::NotFound => Error::not_found("The resource could not be found."),
        db::Error::ForeignKey => Error::not_found("The image could not be found."),
        other => Error::internal(&other),
    }
}
