//! Image records: create, JSON-patch update, delete, tags, deactivate and
//! reactivate.
//!
//! Every write is one transaction whose first statement locks what it is
//! about to change (`store::image::lock` for the image, `lock_owner` for a
//! project's quota); it then loads the image, checks visibility and policy
//! on what it loaded, and writes guarded by the revision it read. Two
//! writes to one image therefore apply one after the other, each to what
//! the other left (no lost tag, no format change slipping in after an
//! upload read the format), and a write that finds the image changed under
//! it anyway answers 409.

use std::collections::{BTreeMap, BTreeSet};

use api::{AuthContext, Error, Target};

use super::{db_err, is_uuid, not_found, over_quota, sees, target, Image, Images};
use crate::store as db;
use crate::store::image::ImageRow;
use crate::store::member::MemberRow;
use crate::store::Tx;

/// One attribute with its value, already validated by the API layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Name(Option<String>),
    Visibility(String),
    Protected(bool),
    OsHidden(bool),
    Owner(Option<String>),
    DiskFormat(Option<String>),
    ContainerFormat(Option<String>),
    MinDisk(i64),
    MinRam(i64),
    Tags(BTreeSet<String>),
    /// A custom property.
    Property(String, String),
}

impl Attr {
    /// The attribute's name, as a patch path names it.
    pub fn key(&self) -> &str {
        match self {
            Attr::Name(_) => "name",
            Attr::Visibility(_) => "visibility",
            Attr::Protected(_) => "protected",
            Attr::OsHidden(_) => "os_hidden",
            Attr::Owner(_) => "owner",
            Attr::DiskFormat(_) => "disk_format",
            Attr::ContainerFormat(_) => "container_format",
            Attr::MinDisk(_) => "min_disk",
            Attr::MinRam(_) => "min_ram",
            Attr::Tags(_) => "tags",
            Attr::Property(k, _) => k,
        }
    }

    fn apply(self, img: &mut Image) {
        let r = &mut img.row;
        match self {
            Attr::Name(v) => r.name = v,
            Attr::Visibility(v) => r.visibility = v,
            Attr::Protected(v) => r.protected = v,
            Attr::OsHidden(v) => r.os_hidden = v,
            Attr::Owner(v) => r.owner = v,
            Attr::DiskFormat(v) => r.disk_format = v,
            Attr::ContainerFormat(v) => r.container_format = v,
            Attr::MinDisk(v) => r.min_disk = v,
            Attr::MinRam(v) => r.min_ram = v,
            Attr::Tags(v) => img.tags = v,
            Attr::Property(k, v) => {
                img.properties.insert(k, v);
            }
        }
    }
}

/// One JSON-patch operation on an image.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchOp {
    Add(Attr),
    /// Replacing a custom property needs it to exist (409 otherwise).
    Replace(Attr),
    /// Removes a custom property (the API layer refuses core attributes).
    Remove(String),
}

/// What a create request asks for.
#[derive(Debug, Clone, Default)]
pub struct NewImage {
    /// A caller-chosen id (a UUID, lowercased).
    pub id: Option<String>,
    pub attrs: Vec<Attr>,
}

/// The conflict a guarded write reports when the image changed under it.
fn changed(id: &str) -> Error {
    Error::conflict(format!(
        "Image {id} was changed by another request while this one was applied; retry."
    ))
}

impl Images {
    /// Locks image `id` for the rest of `tx`, loads it with its properties
    /// and tags, and checks that the caller may see it (404 otherwise) and
    /// `get_image`. The transaction's first statement must be this one.
    pub(crate) async fn locked(
        &self,
        tx: &mut Tx<'_>,
        ctx: &AuthContext,
        id: &str,
    ) -> Result<(Image, Target), Error> {
        if !is_uuid(id) || !db::image::lock(tx, id).await.map_err(db_err)? {
            return Err(not_found(id));
        }
        let row = db::image::get(&mut **tx, id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| not_found(id))?;
        let properties = db::image::properties(&mut **tx, id).await.map_err(db_err)?;
        let tags = db::image::tags(&mut **tx, id).await.map_err(db_err)?;
        let member = match ctx.project_id() {
            Some(p) => db::member::get(&mut **tx, id, p).await.map_err(db_err)?,
            None => None,
        };
        if !sees(ctx, &row, member.as_ref()) {
            return Err(not_found(id));
        }
        let target = target(&row, member.as_ref());
        self.policy.enforce("get_image", ctx, &target)?;
        Ok((
            Image {
                row,
                properties,
                tags,
            },
            target,
        ))
    }

    /// How many more bytes image `id` may hold: the size cap, or less when
    /// its owner's `image_size_total` leaves less (the image's own usage
    /// left out); 413 when nothing is left. Locks the owner's quota for the
    /// rest of `tx`, so that the claim the caller writes next is checked
    /// against usage no other transaction can change before it commits.
    pub(crate) async fn bytes_left(
        &self,
        tx: &mut Tx<'_>,
        owner: Option<&str>,
        id: &str,
    ) -> Result<u64, Error> {
        let mut left = self.cfg.image_size_cap;
        if let (Some(max), Some(owner)) = (self.cfg.quota_image_bytes, owner) {
            db::image::lock_owner(tx, owner).await.map_err(db_err)?;
            let (_, used) = db::image::usage(&mut **tx, owner, Some(id))
                .await
                .map_err(db_err)?;
            let rest = max.saturating_sub(used.max(0) as u64);
            if rest == 0 {
                return Err(over_quota(format!(
                    "Denying attempt to upload image because it exceeds the quota: the project may store {max} bytes of image data (image_size_total)."
                )));
            }
            left = left.min(rest);
        }
        Ok(left)
    }

    /// The per-image limits: properties and tags.
    fn check_limits(&self, img: &Image) -> Result<(), Error> {
        let props = img
            .properties
            .keys()
            .filter(|k| !k.starts_with("os_glance"))
            .count();
        if props > self.cfg.property_quota {
            return Err(over_quota(format!(
                "Maximum number of image properties exceeded: at most {} (image_property_quota).",
                self.cfg.property_quota
            )));
        }
        if img.tags.len() > self.cfg.tag_quota {
            return Err(over_quota(format!(
                "Maximum number of tags exceeded: at most {} (image_tag_quota).",
                self.cfg.tag_quota
            )));
        }
        Ok(())
    }

    /// The policy checks a visibility entails.
    fn check_visibility(
        &self,
        ctx: &AuthContext,
        visibility: &str,
        target: &Target,
    ) -> Result<(), Error> {
        match visibility {
            "public" => self.policy.enforce("publicize_image", ctx, target),
            "community" => self.policy.enforce("communitize_image", ctx, target),
            _ => Ok(()),
        }
    }

    /// `POST /v2/images`. The count quota is checked in the transaction
    /// that inserts, after locking the owner's quota.
    pub async fn create_image(&self, ctx: &AuthContext, new: NewImage) -> Result<Image, Error> {
        let now = store::now_micros();
        let mut img = Image {
            row: ImageRow {
                id: new.id.unwrap_or_else(store::new_uuid),
                name: None,
                status: "queued".into(),
                visibility: "shared".into(),
                protected: false,
                os_hidden: false,
                owner: ctx.project_id().map(str::to_string),
                disk_format: None,
                container_format: None,
                size: None,
                virtual_size: None,
                checksum: None,
                os_hash_algo: None,
                os_hash_value: None,
                min_disk: 0,
                min_ram: 0,
                store: None,
                created_at: now,
                updated_at: now,
                revision: 0,
                reserved: 0,
            },
            properties: BTreeMap::new(),
            tags: BTreeSet::new(),
        };
        for a in new.attrs {
            a.apply(&mut img);
        }
        let owner = img.row.owner.clone().unwrap_or_default();
        let target = Target::new()
            .with("project_id", owner.clone())
            .with("owner", owner.clone())
            .with("visibility", img.row.visibility.clone());
        self.policy.enforce("add_image", ctx, &target)?;
        if !ctx.is_admin() && img.row.owner.as_deref() != ctx.project_id() {
            return Err(Error::forbidden(format!(
                "You are not permitted to create images owned by '{owner}'."
            )));
        }
        self.check_visibility(ctx, &img.row.visibility, &target)?;
        self.check_limits(&img)?;
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        if let (Some(max), Some(owner)) = (self.cfg.quota_image_count, &img.row.owner) {
            db::image::lock_owner(&mut tx, owner)
                .await
                .map_err(db_err)?;
            let (count, _) = db::image::usage(&mut *tx, owner, None)
                .await
                .map_err(db_err)?;
            if count as u64 >= max {
                return Err(over_quota(format!(
                    "Maximum number of images exceeded: the project may own {max} images (image_count_total)."
                )));
            }
        }
        db::image::insert(&mut tx, &img.row)
            .await
            .map_err(|e| match e {
                db::Error::Conflict(_) => Error::conflict(format!(
                    "An image with identifier {} already exists",
                    img.row.id
                )),
                other => db_err(other),
            })?;
        db::image::set_properties(&mut tx, &img.row.id, &img.properties)
            .await
            .map_err(db_err)?;
        db::image::set_tags(&mut tx, &img.row.id, &img.tags)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(|e| Error::internal(&e))?;
        Ok(img)
    }

    /// `PATCH /v2/images/{id}`: applies the operations to the image as it
    /// is inside the transaction.
    pub async fn update_image(
        &self,
        ctx: &AuthContext,
        id: &str,
        ops: Vec<PatchOp>,
    ) -> Result<Image, Error> {
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        let (orig, target) = self.locked(&mut tx, ctx, id).await?;
        self.policy.enforce("modify_image", ctx, &target)?;
        let mut img = orig.clone();
        for op in ops {
            let key = match &op {
                PatchOp::Add(a) | PatchOp::Replace(a) => a.key().to_string(),
                PatchOp::Remove(k) => k.clone(),
            };
            // The format attributes say what the data is checked against:
            // they change only before there is data (or a transfer of it).
            if (key == "disk_format" || key == "container_format") && img.row.status != "queued" {
                return Err(Error::forbidden(format!(
                    "Attribute {key} can be only replaced for a queued image."
                )));
            }
            match op {
                PatchOp::Remove(k) => {
                    if img.properties.remove(&k).is_none() {
                        return Err(Error::conflict(format!("Property {k} does not exist.")));
                    }
                }
                PatchOp::Replace(Attr::Property(k, _)) if !img.properties.contains_key(&k) => {
                    return Err(Error::conflict(format!("Property {k} does not exist.")));
                }
                PatchOp::Add(a) | PatchOp::Replace(a) => a.apply(&mut img),
            }
        }
        if img.row.owner != orig.row.owner && !ctx.is_admin() {
            return Err(Error::forbidden(
                "You are not permitted to change the owner of an image.",
            ));
        }
        if img.row.visibility != orig.row.visibility {
            self.check_visibility(ctx, &img.row.visibility, &target)?;
        }
        self.check_limits(&img)?;
        img.row.updated_at = store::now_micros();
        if !db::image::update_attrs(&mut tx, &img.row)
            .await
            .map_err(db_err)?
        {
            return Err(changed(id));
        }
        img.row.revision += 1;
        if img.properties != orig.properties {
            db::image::set_properties(&mut tx, id, &img.properties)
                .await
                .map_err(db_err)?;
        }
        if img.tags != orig.tags {
            db::image::set_tags(&mut tx, id, &img.tags)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(|e| Error::internal(&e))?;
        Ok(img)
    }

    /// `DELETE /v2/images/{id}`: `protected` is checked on the row the
    /// delete locked. An import in progress is cancelled, then the data
    /// (stored, staged or partial) is removed.
    pub async fn delete_image(&self, ctx: &AuthContext, id: &str) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        let (img, target) = self.locked(&mut tx, ctx, id).await?;
        self.policy.enforce("delete_image", ctx, &target)?;
        if img.row.protected {
            return Err(Error::forbidden(format!(
                "Image {id} is protected and cannot be deleted."
            )));
        }
        if !db::image::delete(&mut tx, id).await.map_err(db_err)? {
            return Err(not_found(id));
        }
        tx.commit().await.map_err(|e| Error::internal(&e))?;
        // What still writes the image's data stops (and removes its
        // temporary file) before the data is deleted.
        self.imports.cancel(id).await;
        self.transfers.cancel(id).await;
        super::data::delete_data(self, id);
        Ok(())
    }

    /// `PUT /v2/images/{id}/tags/{tag}`.
    pub async fn add_tag(&self, ctx: &AuthContext, id: &str, tag: String) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        let (mut img, target) = self.locked(&mut tx, ctx, id).await?;
        self.policy.enforce("modify_image", ctx, &target)?;
        if !img.tags.insert(tag) {
            return Ok(());
        }
        self.check_limits(&img)?;
        db::image::set_tags(&mut tx, id, &img.tags)
            .await
            .map_err(db_err)?;
        db::image::touch(&mut tx, id).await.map_err(db_err)?;
        tx.commit().await.map_err(|e| Error::internal(&e))
    }

    /// `DELETE /v2/images/{id}/tags/{tag}`.
    pub async fn remove_tag(&self, ctx: &AuthContext, id: &str, tag: &str) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        let (mut img, target) = self.locked(&mut tx, ctx, id).await?;
        self.policy.enforce("modify_image", ctx, &target)?;
        if !img.tags.remove(tag) {
            return Err(Error::not_found(format!("Tag {tag} not found.")));
        }
        db::image::set_tags(&mut tx, id, &img.tags)
            .await
            .map_err(db_err)?;
        db::image::touch(&mut tx, id).await.map_err(db_err)?;
        tx.commit().await.map_err(|e| Error::internal(&e))
    }

    /// `POST /v2/images/{id}/members`: only the owner (or an admin) adds
    /// members, only to a shared image, and the member quota is counted in
    /// the transaction that inserts.
    pub async fn add_member(
        &self,
        ctx: &AuthContext,
        id: &str,
        member: &str,
    ) -> Result<MemberRow, Error> {
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        let (img, target) = self.locked(&mut tx, ctx, id).await?;
        self.policy.enforce("add_member", ctx, &target)?;
        let owner = ctx.project_id().is_some() && ctx.project_id() == img.row.owner.as_deref();
        if !owner && !ctx.is_admin() {
            return Err(Error::forbidden(
                "Only the image owner can add members to an image.",
            ));
        }
        if img.row.visibility != "shared" {
            return Err(Error::forbidden("Only shared images have members."));
        }
        let count = db::member::count(&mut *tx, id).await.map_err(db_err)?;
        if count as usize >= self.cfg.member_quota {
            return Err(over_quota(format!(
                "Maximum number of image members exceeded: at most {} (image_member_quota).",
                self.cfg.member_quota
            )));
        }
        let now = store::now_micros();
        let m = MemberRow {
            image_id: id.to_string(),
            member: member.to_string(),
            status: "pending".into(),
            created_at: now,
            updated_at: now,
        };
        db::member::insert(&mut tx, &m).await.map_err(|e| match e {
            db::Error::Conflict(_) => Error::conflict(format!(
                "The member {member} is already associated with image {id}."
            )),
            other => db_err(other),
        })?;
        tx.commit().await.map_err(|e| Error::internal(&e))?;
        Ok(m)
    }

    /// `POST /v2/images/{id}/actions/deactivate` (`active: false`) and
    /// `.../reactivate` (`active: true`).
    pub async fn set_active(&self, ctx: &AuthContext, id: &str, active: bool) -> Result<(), Error> {
        let (rule, verb, from, to) = if active {
            ("reactivate", "reactivate", "deactivated", "active")
        } else {
            ("deactivate", "deactivate", "active", "deactivated")
        };
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        let (img, target) = self.locked(&mut tx, ctx, id).await?;
        self.policy.enforce(rule, ctx, &target)?;
        let status = img.row.status.as_str();
        if status == to {
            return Ok(());
        }
        if status != from {
            return Err(Error::bad_request(format!(
                "Not allowed to {verb} image in status '{status}'"
            )));
        }
        if !db::image::set_status(&mut *tx, id, &[from], to)
            .await
            .map_err(db_err)?
        {
            return Err(changed(id));
        }
        tx.commit().await.map_err(|e| Error::internal(&e))
    }
}
