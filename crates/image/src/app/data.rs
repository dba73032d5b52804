//! The data paths: direct upload (`PUT file`), staging (`PUT stage`),
//! interoperable import (`glance-direct`, `web-download`), and deleting an
//! image's data.
//!
//! Every path writes into a temporary file (see [`crate::blob`]), checks
//! the complete file with the format inspector, and only then makes it the
//! image's data and the image active. Whatever interrupts a path — the
//! client disconnecting (which drops the request's future mid-await), bad
//! data, a quota — leaves no file behind and puts the image back where it
//! was: the temporary file and the status are both restored by drop guards,
//! so this holds even when the handler never runs another line.

use std::sync::Arc;

use api::Error;
use bytes::Bytes;
use futures_util::Stream;

use super::{db_err, over_quota, Image, Images};
use crate::blob::{self, Digest, ImageStore, ReceiveError, TempBlob};
use crate::store as db;

/// Puts an image back into a status when dropped while armed (the request
/// was cancelled or failed), unless [`disarm`](StatusGuard::disarm)ed.
struct StatusGuard {
    svc: Arc<Images>,
    id: String,
    from: &'static str,
    to: &'static str,
    armed: bool,
}

impl StatusGuard {
    fn new(svc: &Arc<Images>, id: &str, from: &'static str, to: &'static str) -> Self {
        StatusGuard {
            svc: svc.clone(),
            id: id.to_string(),
            from,
            to,
            armed: true,
        }
    }
    fn disarm(mut self) {
        self.armed = false;
    }
    /// Puts the status back now (the handler is still running, so the
    /// client's next request already sees the image as it was).
    async fn reset(mut self) {
        self.armed = false;
        if let Err(e) = db::image::set_status(&self.svc.pool, &self.id, &[self.from], self.to).await
        {
            tracing::warn!(image = %self.id, error = %e, "could not reset the image status");
        }
        if self.from == "uploading" {
            let _ = self.svc.staging.delete(&self.id);
        }
    }
}

impl Drop for StatusGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (svc, id, from, to) = (self.svc.clone(), self.id.clone(), self.from, self.to);
        // Drop cannot await; the reset runs as its own task. If the runtime
        // is going away, recovery at the next start does the same.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = db::image::set_status(&svc.pool, &id, &[from], to).await {
                    tracing::warn!(image = %id, error = %e, "could not reset the image status");
                }
                if from == "uploading" {
                    let _ = svc.staging.delete(&id);
                }
            });
        }
    }
}

fn require_formats(image: &Image) -> Result<(&str, &str), Error> {
    match (
        image.row.disk_format.as_deref(),
        image.row.container_format.as_deref(),
    ) {
        (Some(d), Some(c)) => Ok((d, c)),
        _ => Err(Error::bad_request(
            "Properties disk_format, container_format must be set prior to saving data.",
        )),
    }
}

fn receive_error(e: ReceiveError, owner_limit: u64, cap: u64) -> Error {
    match e {
        ReceiveError::Interrupted(why) => {
            Error::bad_request(format!("The image data was not received completely: {why}"))
        }
        ReceiveError::TooLarge(_) if owner_limit < cap => over_quota(format!(
            "Denying attempt to upload image because it exceeds the quota: at most {owner_limit} more bytes may be stored by this project."
        )),
        ReceiveError::TooLarge(_) => over_quota(format!(
            "Image exceeds the storage quota: the largest image accepted is {cap} bytes (image_size_cap)."
        )),
        ReceiveError::Io(e) => Error::internal(&e),
    }
}

/// Runs the format inspector on a complete file, on a blocking thread.
/// A rejection is the client's 400 with the inspector's message.
///
/// Zero bytes are accepted whatever the declared format: there is nothing
/// in them for QEMU to misread, and the CLI uploads an empty body when it
/// runs with a standard input that is not a terminal and no `--file`.
async fn inspect(
    declared: &str,
    path: std::path::PathBuf,
    size: u64,
) -> Result<diskformat::Inspection, Error> {
    if size == 0 {
        return Ok(diskformat::Inspection {
            format: diskformat::DiskFormat::from_glance(declared)
                .unwrap_or(diskformat::DiskFormat::Raw),
            virtual_size: 0,
            actual_size: 0,
        });
    }
    let declared = declared.to_string();
    tokio::task::spawn_blocking(move || diskformat::verify_path(&declared, &path))
        .await
        .map_err(|e| Error::internal(&e))?
        .map_err(|r| match r {
            diskformat::Rejection::Io(e) => Error::internal(&e),
            other => {
                Error::bad_request(format!("Image rejected by the format inspector: {other}."))
            }
        })
}

fn data_of(d: &Digest, inspection: &diskformat::Inspection, store: &str) -> db::image::Data {
    db::image::Data {
        size: d.size as i64,
        virtual_size: i64::try_from(inspection.virtual_size).ok(),
        checksum: d.md5.clone(),
        os_hash_algo: "sha512".into(),
        os_hash_value: d.sha512.clone(),
        store: store.to_string(),
    }
}

/// Commits checked data as the image's and makes it active, if the image
/// is still in status `from` (it may have been deleted meanwhile, in which
/// case the data is removed again).
async fn activate(
    svc: &Images,
    id: &str,
    from: &str,
    data: &db::image::Data,
    clear_import: bool,
) -> Result<bool, Error> {
    let mut tx = svc.pool.begin().await.map_err(|e| Error::internal(&e))?;
    let ok = db::image::set_data(&mut tx, id, from, data)
        .await
        .map_err(db_err)?;
    if ok && clear_import {
        db::image::put_properties(
            &mut tx,
            id,
            &[
                ("os_glance_importing_to_stores", Some("")),
                ("os_glance_failed_import", Some("")),
            ],
        )
        .await
        .map_err(db_err)?;
    }
    tx.commit().await.map_err(|e| Error::internal(&e))?;
    if !ok {
        let _ = svc.store.delete(id);
    }
    Ok(ok)
}

/// `PUT /v2/images/{id}/file`: streams the body into the store.
pub async fn upload<S, E>(
    svc: &Arc<Images>,
    image: &Image,
    body: S,
    declared_len: Option<u64>,
) -> Result<(), Error>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let id = image.row.id.as_str();
    let (disk_format, _) = require_formats(image)?;
    if image.row.status != "queued" {
        return Err(Error::conflict(format!(
            "Image status transition from {} to saving is not allowed",
            image.row.status
        )));
    }
    let left = svc.bytes_left(image.row.owner.as_deref()).await?;
    if declared_len.is_some_and(|n| n > left) {
        return Err(receive_error(
            ReceiveError::TooLarge(left),
            left,
            svc.cfg.image_size_cap,
        ));
    }
    if !db::image::set_status(&svc.pool, id, &["queued"], "saving")
        .await
        .map_err(db_err)?
    {
        return Err(Error::conflict(
            "Image status transition from queued to saving is not allowed: another upload is in progress",
        ));
    }
    let guard = StatusGuard::new(svc, id, "saving", "queued");
    let result = async {
        let mut temp = svc.store.temp().map_err(|e| Error::internal(&e))?;
        let digest = blob::receive(body, &mut temp, Some(left))
            .await
            .map_err(|e| receive_error(e, left, svc.cfg.image_size_cap))?;
        let inspection = inspect(disk_format, temp.path().to_path_buf(), digest.size).await?;
        svc.store
            .commit(temp, id)
            .map_err(|e| Error::internal(&e))?;
        let data = data_of(&digest, &inspection, svc.store.id());
        if !activate(svc, id, "saving", &data, false).await? {
            return Err(Error::conflict(
                "The image was deleted or changed while its data was being uploaded.",
            ));
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            guard.disarm();
            Ok(())
        }
        Err(e) => {
            guard.reset().await;
            Err(e)
        }
    }
}

/// `PUT /v2/images/{id}/stage`: streams the body into the staging area.
pub async fn stage<S, E>(
    svc: &Arc<Images>,
    image: &Image,
    body: S,
    declared_len: Option<u64>,
) -> Result<(), Error>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let id = image.row.id.as_str();
    if image.row.status != "queued" {
        return Err(Error::conflict(format!(
            "Image status transition from {} to uploading is not allowed",
            image.row.status
        )));
    }
    let left = svc.bytes_left(image.row.owner.as_deref()).await?;
    if declared_len.is_some_and(|n| n > left) {
        return Err(receive_error(
            ReceiveError::TooLarge(left),
            left,
            svc.cfg.image_size_cap,
        ));
    }
    if !db::image::set_status(&svc.pool, id, &["queued"], "uploading")
        .await
        .map_err(db_err)?
    {
        return Err(Error::conflict(
            "Image status transition from queued to uploading is not allowed: another upload is in progress",
        ));
    }
    let guard = StatusGuard::new(svc, id, "uploading", "queued");
    let result = async {
        let mut temp = svc.staging.temp().map_err(|e| Error::internal(&e))?;
        blob::receive(body, &mut temp, Some(left))
            .await
            .map_err(|e| receive_error(e, left, svc.cfg.image_size_cap))?;
        svc.staging
            .commit(temp, id)
            .map_err(|e| Error::internal(&e))
    }
    .await;
    match result {
        Ok(()) => {
            guard.disarm();
            Ok(())
        }
        Err(e) => {
            guard.reset().await;
            Err(e)
        }
    }
}

/// An import method with its argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    GlanceDirect,
    WebDownload(String),
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::GlanceDirect => "glance-direct",
            Method::WebDownload(_) => "web-download",
        }
    }
}

/// `POST /v2/images/{id}/import`: checks the preconditions synchronously,
/// moves the image to `importing`, and runs the import as a task.
pub async fn start_import(
    svc: &Arc<Images>,
    image: &Image,
    method: Method,
) -> Result<String, Error> {
    let id = image.row.id.clone();
    require_formats(image)?;
    let from = match &method {
        Method::GlanceDirect => {
            if image.row.status != "uploading" || !svc.staging.exists(&id) {
                return Err(Error::conflict(
                    "Image needs to be staged before 'glance-direct' method can be used",
                ));
            }
            "uploading"
        }
        Method::WebDownload(uri) => {
            if image.row.status != "queued" {
                return Err(Error::conflict(format!(
                    "Image needs to be in 'queued' state to use 'web-download' method, not '{}'",
                    image.row.status
                )));
            }
            // The URL's form and its addresses are checked now so a
            // refused URL is the caller's 400; the fetch checks again
            // (and checks every redirect) when it runs.
            let url = super::fetch::parse_url(uri)
                .map_err(|m| Error::bad_request(format!("Invalid web-download URI: {m}.")))?;
            super::fetch::resolve(&url, svc.fetcher.allow_loopback())
                .await
                .map_err(|m| Error::bad_request(format!("Invalid web-download URI: {m}.")))?;
            "queued"
        }
    };
    if !db::image::set_status(&svc.pool, &id, &[from], "importing")
        .await
        .map_err(db_err)?
    {
        return Err(Error::conflict(format!(
            "Image status transition from {from} to importing is not allowed"
        )));
    }
    let task_id = store::new_uuid();
    let now = store::now_micros();
    let mut tx = svc.pool.begin().await.map_err(|e| Error::internal(&e))?;
    db::image::put_properties(
        &mut tx,
        &id,
        &[
            ("os_glance_import_task", Some(task_id.as_str())),
            ("os_glance_importing_to_stores", Some(svc.store.id())),
            ("os_glance_failed_import", Some("")),
        ],
    )
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(|e| Error::internal(&e))?;
    db::task::insert(
        &svc.pool,
        &db::task::TaskRow {
            id: task_id.clone(),
            image_id: id.clone(),
            owner: image.row.owner.clone(),
            status: "processing".into(),
            method: method.name().into(),
            message: String::new(),
            created_at: now,
            updated_at: now,
        },
    )
    .await
    .map_err(db_err)?;
    let svc2 = svc.clone();
    let image = image.clone();
    let tid = task_id.clone();
    tokio::spawn(async move {
        let result = run_import(&svc2, &image, &method).await;
        match result {
            Ok(()) => {
                let _ = db::task::finish(&svc2.pool, &tid, "success", "").await;
            }
            Err(message) => {
                tracing::info!(image = %image.row.id, %message, "image import failed");
                import_failed(&svc2, &image.row.id, Some(&tid), &message).await;
            }
        }
    });
    Ok(task_id)
}

/// Records a failed import the way Glance does: the image goes back to
/// `queued`, `os_glance_failed_import` names the store, staged data is
/// deleted, and the task says why.
pub async fn import_failed(svc: &Images, id: &str, task: Option<&str>, message: &str) {
    let _ = svc.staging.delete(id);
    if let Some(t) = task {
        let _ = db::task::finish(&svc.pool, t, "failure", message).await;
    }
    // Properties first, then the status: whoever sees `queued` also sees
    // the failure recorded.
    if let Ok(mut tx) = svc.pool.begin().await {
        let _ = db::image::put_properties(
            &mut tx,
            id,
            &[
                ("os_glance_importing_to_stores", Some("")),
                ("os_glance_failed_import", Some(svc.store.id())),
            ],
        )
        .await;
        let _ = tx.commit().await;
    }
    let _ = db::image::set_status(&svc.pool, id, &["importing"], "queued").await;
}

async fn run_import(svc: &Arc<Images>, image: &Image, method: &Method) -> Result<(), String> {
    let id = image.row.id.as_str();
    let disk_format = image.row.disk_format.clone().unwrap_or_default();
    let left = svc
        .bytes_left(image.row.owner.as_deref())
        .await
        .map_err(|e| e.message)?;
    match method {
        Method::GlanceDirect => {
            let path = svc.staging.path(id).map_err(|e| e.to_string())?;
            let digest = blob::digest_file(path.clone())
                .await
                .map_err(|e| format!("reading the staged data failed: {e}"))?;
            if digest.size > left {
                return Err(receive_error(
                    ReceiveError::TooLarge(left),
                    left,
                    svc.cfg.image_size_cap,
                )
                .message);
            }
            let inspection = inspect(&disk_format, path.clone(), digest.size)
                .await
                .map_err(|e| e.message)?;
            svc.store.adopt(&path, id).map_err(|e| e.to_string())?;
            let data = data_of(&digest, &inspection, svc.store.id());
            if !activate(svc, id, "importing", &data, true)
                .await
                .map_err(|e| e.message)?
            {
                return Err("the image was deleted during the import".into());
            }
        }
        Method::WebDownload(uri) => {
            let stream = svc.fetcher.open(uri).await?;
            let mut temp: TempBlob = svc.store.temp().map_err(|e| e.to_string())?;
            let digest = blob::receive(stream, &mut temp, Some(left))
                .await
                .map_err(|e| receive_error(e, left, svc.cfg.image_size_cap).message)?;
            let inspection = inspect(&disk_format, temp.path().to_path_buf(), digest.size)
                .await
                .map_err(|e| e.message)?;
            svc.store.commit(temp, id).map_err(|e| e.to_string())?;
            let data = data_of(&digest, &inspection, svc.store.id());
            if !activate(svc, id, "importing", &data, true)
                .await
                .map_err(|e| e.message)?
            {
                return Err("the image was deleted during the import".into());
            }
        }
    }
    Ok(())
}

/// Deletes an image's data wherever it is (store and staging area).
pub fn delete_data(svc: &Images, id: &str) {
    if let Err(e) = svc.store.delete(id) {
        tracing::warn!(image = %id, error = %e, "could not delete image data");
    }
    let _ = svc.staging.delete(id);
}
