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
//!
//! Each transfer starts in one transaction that locks the image, reads its
//! status and formats, checks the owner's byte quota and reserves the
//! declared size (`reserved`), and moves the image to `saving`,
//! `uploading` or `importing`; while the data arrives, each time the bytes
//! received pass the reservation a short transaction grows it (by
//! `RESERVE_STEP`, 64 MiB, or to exactly what was received near the quota) or
//! refuses the transfer with 413, so transfers that declare no size
//! (chunked uploads, web-downloads without a Content-Length) cannot write
//! more than the quota between them; it ends in one transaction that
//! checks the quota again against the size received and makes the image
//! active. The format the data was inspected against is the one read in
//! the first: the format attributes cannot change once the image left
//! `queued`.
//!
//! Uploads and stages are tracked ([`Transfers`]) so that deleting their
//! image stops them at once (the client gets Glance's 410) and their
//! temporary file goes before the delete answers.
//!
//! Imports run as tracked tasks ([`Imports`]): at most
//! `ImportLimits::max_concurrent` at once (the others wait with their task
//! `pending`), each bounded by an idle and a total timeout, and cancelled
//! when their image is deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{AuthContext, Error};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

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
        restore(&self.svc, &self.id, self.from, self.to).await;
    }
}

/// Puts image `id` back from `from` into `to` and removes what the
/// interrupted transfer left: a staged file, or — when the image was
/// still `saving`, so its data never became the image's — a file already
/// committed to the store (the request can be dropped between the commit
/// and the end of [`activate`], whose own clean-up then never runs).
async fn restore(svc: &Images, id: &str, from: &str, to: &str) {
    match db::image::set_status(&svc.pool, id, &[from], to).await {
        Ok(true) if from == "saving" => {
            if let Err(e) = svc.store.delete(id) {
                tracing::warn!(image = %id, error = %e, "could not delete unfinished image data");
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(image = %id, error = %e, "could not reset the image status");
        }
    }
    if from == "uploading" {
        let _ = svc.staging.delete(id);
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
            rt.spawn(async move { restore(&svc, &id, from, to).await });
        }
    }
}

/// Bytes a transfer's reservation grows by when what it received passes
/// it (while the owner's quota has room for a whole step; nearer the
/// quota it grows to exactly what was received).
const RESERVE_STEP: u64 = 64 << 20;

/// One in-flight upload or stage, as [`Transfers`] tracks it.
struct Tracked {
    serial: u64,
    cancel: tokio_util::sync::CancellationToken,
    /// Closed when the transfer has stopped (its [`TransferGuard`] dropped).
    done: tokio::sync::watch::Receiver<()>,
}

/// The uploads and stages in progress, by image, so deleting an image
/// stops the transfers writing its data.
#[derive(Default)]
pub struct Transfers {
    running: Mutex<HashMap<String, Vec<Tracked>>>,
    next: std::sync::atomic::AtomicU64,
}

/// Keeps a transfer registered in [`Transfers`]; unregisters it (and tells
/// a waiting [`Transfers::cancel`] it stopped) when dropped.
struct TransferGuard {
    svc: Arc<Images>,
    id: String,
    serial: u64,
    cancel: tokio_util::sync::CancellationToken,
    _done: tokio::sync::watch::Sender<()>,
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        let mut map = self
            .svc
            .transfers
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(&self.id) {
            list.retain(|t| t.serial != self.serial);
            if list.is_empty() {
                map.remove(&self.id);
            }
        }
    }
}

impl Transfers {
    /// Registers a transfer of image `id`'s data (before it starts, so a
    /// delete that commits at any time after finds it).
    fn register(svc: &Arc<Images>, id: &str) -> TransferGuard {
        let serial = svc
            .transfers
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cancel = tokio_util::sync::CancellationToken::new();
        let (done_tx, done) = tokio::sync::watch::channel(());
        svc.transfers
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .push(Tracked {
                serial,
                cancel: cancel.clone(),
                done,
            });
        TransferGuard {
            svc: svc.clone(),
            id: id.to_string(),
            serial,
            cancel,
            _done: done_tx,
        }
    }

    /// How many uploads and stages are in progress.
    pub fn len(&self) -> usize {
        self.running
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Whether no upload or stage is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops image `id`'s uploads and stages, if any, and waits (briefly)
    /// until they have stopped: their temporary files are gone and they
    /// write nothing more.
    pub async fn cancel(&self, id: &str) {
        let list = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .unwrap_or_default();
        for mut t in list {
            t.cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while t.done.changed().await.is_ok() {}
            })
            .await;
        }
    }
}

/// Why a [`metered`] body stopped, when it was not the source failing:
/// the error the transfer answers with.
type Stop = Arc<Mutex<Option<Error>>>;

/// Sets image `id`'s reservation in one short transaction under the
/// owner's quota lock: to `want` bytes while the quota has room for them,
/// else to `need` — and fails with 413 when even `need` does not fit, or
/// with 410 (as at the end of an upload) when the image left `status`.
/// Returns the bytes reserved.
async fn extend_reservation(
    svc: &Images,
    id: &str,
    status: &str,
    need: u64,
    want: u64,
) -> Result<u64, Error> {
    let mut tx = svc.pool.begin().await.map_err(|e| Error::internal(&e))?;
    if !db::image::lock(&mut tx, id).await.map_err(db_err)? {
        return Err(gone_during_upload(id));
    }
    let row = db::image::get(&mut *tx, id)
        .await
        .map_err(db_err)?
        .ok_or_else(|| gone_during_upload(id))?;
    if row.status != status {
        return Err(gone_during_upload(id));
    }
    let left = svc.bytes_left(&mut tx, row.owner.as_deref(), id).await?;
    if need > left {
        return Err(receive_error(
            ReceiveError::TooLarge(left),
            left,
            svc.cfg.image_size_cap,
        ));
    }
    let grant = if want <= left { want.max(need) } else { need };
    if !db::image::set_reserved(&mut tx, id, status, grant.min(i64::MAX as u64) as i64)
        .await
        .map_err(db_err)?
    {
        return Err(gone_during_upload(id));
    }
    tx.commit().await.map_err(|e| Error::internal(&e))?;
    Ok(grant)
}

/// Glance's answer when the image is gone (or changed) by the time the
/// data is saved (image_data.py answers HTTPGone).
fn gone_during_upload(id: &str) -> Error {
    Error::new(
        axum::http::StatusCode::GONE,
        format!("Image {id} could not be found after upload. The image may have been deleted during the upload, cleaning up the chunks uploaded."),
    )
}

/// A transfer's body, metered: whenever the bytes received pass the
/// image's reservation, the reservation grows ([`extend_reservation`]),
/// so parallel transfers without a declared size cannot write more than
/// the owner's quota between them; and the body ends as soon as `cancel`
/// fires (the image was deleted). Either way the reason is left in `stop`.
fn metered<S, E>(
    svc: Arc<Images>,
    id: String,
    status: &'static str,
    reserved: u64,
    cancel: Option<tokio_util::sync::CancellationToken>,
    stop: Stop,
    body: S,
) -> impl Stream<Item = Result<Bytes, String>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let body = Box::pin(body);
    futures_util::stream::unfold(Some((body, reserved, 0u64)), move |state| {
        let (svc, id, cancel, stop) = (svc.clone(), id.clone(), cancel.clone(), stop.clone());
        async move {
            let (mut body, mut reserved, mut received) = state?;
            let halt = |e: Error| {
                let msg = e.message.clone();
                *stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Some((Err(msg), None))
            };
            let next = match &cancel {
                Some(c) => tokio::select! {
                    n = body.next() => n,
                    _ = c.cancelled() => return halt(gone_during_upload(&id)),
                },
                None => body.next().await,
            };
            match next {
                None => None,
                Some(Err(e)) => Some((Err(e.to_string()), None)),
                Some(Ok(b)) => {
                    received += b.len() as u64;
                    if received > reserved {
                        let want = reserved.saturating_add(RESERVE_STEP);
                        match extend_reservation(&svc, &id, status, received, want).await {
                            Ok(n) => reserved = n,
                            Err(e) => return halt(e),
                        }
                    }
                    Some((Ok(b), Some((body, reserved, received))))
                }
            }
        }
    })
}

/// Receives a transfer's `body` into `temp` through [`metered`] (the
/// reservation grows as bytes arrive; `cancel` stops it), at most `left`
/// bytes, and answers the reason it stopped when it did.
#[allow(clippy::too_many_arguments)]
async fn receive_metered<S, E>(
    svc: &Arc<Images>,
    id: &str,
    status: &'static str,
    reserved: u64,
    left: u64,
    cancel: Option<tokio_util::sync::CancellationToken>,
    body: S,
    temp: &mut TempBlob,
) -> Result<Digest, Error>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let stop = Stop::default();
    let body = metered(
        svc.clone(),
        id.to_string(),
        status,
        reserved,
        cancel,
        stop.clone(),
        body,
    );
    blob::receive(body, temp, Some(left))
        .await
        .map_err(|e| stopped_or(&stop, e, left, svc.cfg.image_size_cap))
}

/// Ends a transfer: a success disarms its status guard, a failure puts
/// the status back now.
async fn settle(guard: StatusGuard, result: Result<(), Error>) -> Result<(), Error> {
    match result {
        Ok(()) => guard.disarm(),
        Err(_) => guard.reset().await,
    }
    result
}

/// The error a transfer answers with when receiving its body failed: the
/// reason [`metered`] stopped it, else the receive error's.
fn stopped_or(stop: &Stop, e: ReceiveError, left: u64, cap: u64) -> Error {
    stop.lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(|| receive_error(e, left, cap))
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

/// Disk formats whose data may be empty. Glance's inspector detects zero
/// bytes as `raw`, which it accepts for a declared `raw` and for the
/// formats it cannot inspect (`ami`, `ari`, `aki`, `ploop`); every other
/// declared format (`iso` included) is a mismatch it refuses.
const MAY_BE_EMPTY: &[&str] = &["raw", "ami", "ari", "aki", "ploop"];

/// Runs the format inspector on a complete file, on a blocking thread.
/// A rejection is the client's 400 with the inspector's message.
async fn inspect(
    declared: &str,
    path: std::path::PathBuf,
    size: u64,
) -> Result<diskformat::Inspection, Error> {
    if size == 0 && !MAY_BE_EMPTY.contains(&declared) {
        return Err(Error::bad_request(format!(
            "Image rejected by the format inspector: the data is empty, which is not a {declared} image (only {} images may be empty).",
            MAY_BE_EMPTY.join(", ")
        )));
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

/// Makes data already committed to the store the image's and the image
/// active, if the image is still in status `from` and the owner's quota
/// still has room for it (checked against the usage of every other image,
/// under the owner's quota lock). On any failure the committed data is
/// removed again.
async fn activate(
    svc: &Images,
    id: &str,
    from: &str,
    data: &db::image::Data,
    clear_import: bool,
) -> Result<(), Error> {
    let result = async {
        let mut tx = svc.pool.begin().await.map_err(|e| Error::internal(&e))?;
        let gone = || gone_during_upload(id);
        if !db::image::lock(&mut tx, id).await.map_err(db_err)? {
            return Err(gone());
        }
        let row = db::image::get(&mut *tx, id)
            .await
            .map_err(db_err)?
            .ok_or_else(gone)?;
        if row.status != from {
            return Err(gone());
        }
        let left = svc.bytes_left(&mut tx, row.owner.as_deref(), id).await?;
        if data.size as u64 > left {
            return Err(receive_error(
                ReceiveError::TooLarge(left),
                left,
                svc.cfg.image_size_cap,
            ));
        }
        if !db::image::set_data(&mut tx, id, from, data)
            .await
            .map_err(db_err)?
        {
            return Err(gone());
        }
        if clear_import {
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
        tx.commit().await.map_err(|e| Error::internal(&e))
    }
    .await;
    if result.is_err() {
        let _ = svc.store.delete(id);
    }
    result
}

/// Starts a transfer of image `id`'s data in one transaction: locks the
/// image, checks the caller may and the image is in `from`, checks the
/// owner's byte quota and reserves the declared size, and moves the image
/// to `to`. Returns the image as it was read (its formats are the ones the
/// data will be inspected against), how many bytes it may receive and how
/// many it reserved.
async fn begin(
    svc: &Images,
    ctx: &AuthContext,
    id: &str,
    rule: &str,
    from: &str,
    to: &str,
    declared_len: Option<u64>,
) -> Result<(Image, u64, u64), Error> {
    let mut tx = svc.pool.begin().await.map_err(|e| Error::internal(&e))?;
    let (image, target) = svc.locked(&mut tx, ctx, id).await?;
    svc.policy.enforce(rule, ctx, &target)?;
    if to == "saving" {
        require_formats(&image)?;
    }
    if image.row.status != from {
        return Err(Error::conflict(format!(
            "Image status transition from {} to {to} is not allowed",
            image.row.status
        )));
    }
    let left = svc
        .bytes_left(&mut tx, image.row.owner.as_deref(), id)
        .await?;
    if declared_len.is_some_and(|n| n > left) {
        return Err(receive_error(
            ReceiveError::TooLarge(left),
            left,
            svc.cfg.image_size_cap,
        ));
    }
    let reserve = declared_len.unwrap_or(0).min(i64::MAX as u64) as i64;
    if !db::image::begin_transfer(&mut tx, id, image.row.revision, from, to, reserve)
        .await
        .map_err(db_err)?
    {
        return Err(Error::conflict(format!(
            "Image status transition from {from} to {to} is not allowed: the image changed meanwhile"
        )));
    }
    tx.commit().await.map_err(|e| Error::internal(&e))?;
    Ok((image, left, reserve as u64))
}

/// `PUT /v2/images/{id}/file`: streams the body into the store.
pub async fn upload<S, E>(
    svc: &Arc<Images>,
    ctx: &AuthContext,
    id: &str,
    body: S,
    declared_len: Option<u64>,
) -> Result<(), Error>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    // Registered first: a delete that commits once the upload began finds
    // it and stops it.
    let transfer = Transfers::register(svc, id);
    let (image, left, reserved) = begin(
        svc,
        ctx,
        id,
        "upload_image",
        "queued",
        "saving",
        declared_len,
    )
    .await?;
    let guard = StatusGuard::new(svc, id, "saving", "queued");
    let result = async {
        let (disk_format, _) = require_formats(&image)?;
        let mut temp = svc.store.temp().map_err(|e| Error::internal(&e))?;
        let cancel = Some(transfer.cancel.clone());
        let digest =
            receive_metered(svc, id, "saving", reserved, left, cancel, body, &mut temp).await?;
        let inspection = inspect(disk_format, temp.path().to_path_buf(), digest.size).await?;
        svc.store
            .commit(temp, id)
            .map_err(|e| Error::internal(&e))?;
        let data = data_of(&digest, &inspection, svc.store.id());
        activate(svc, id, "saving", &data, false).await
    }
    .await;
    let result = settle(guard, result).await;
    drop(transfer);
    result
}

/// `PUT /v2/images/{id}/stage`: streams the body into the staging area.
/// The staged file's size stays reserved against the owner's quota until
/// it is imported or dropped.
pub async fn stage<S, E>(
    svc: &Arc<Images>,
    ctx: &AuthContext,
    id: &str,
    body: S,
    declared_len: Option<u64>,
) -> Result<(), Error>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let transfer = Transfers::register(svc, id);
    let (_, left, reserved) = begin(
        svc,
        ctx,
        id,
        "upload_image",
        "queued",
        "uploading",
        declared_len,
    )
    .await?;
    let guard = StatusGuard::new(svc, id, "uploading", "queued");
    let result = async {
        let mut temp = svc.staging.temp().map_err(|e| Error::internal(&e))?;
        let cancel = Some(transfer.cancel.clone());
        let digest = receive_metered(
            svc,
            id,
            "uploading",
            reserved,
            left,
            cancel,
            body,
            &mut temp,
        )
        .await?;
        svc.staging
            .commit(temp, id)
            .map_err(|e| Error::internal(&e))?;
        claim_staged(svc, id, digest.size).await
    }
    .await;
    let result = settle(guard, result).await;
    drop(transfer);
    result
}

/// Reserves a staged file's size, checked against the owner's quota in
/// the same transaction.
async fn claim_staged(svc: &Images, id: &str, size: u64) -> Result<(), Error> {
    let mut tx = svc.pool.begin().await.map_err(|e| Error::internal(&e))?;
    let gone =
        || Error::conflict("The image was deleted or changed while its data was being staged.");
    // Glance's stage saves the image after the data and answers its
    // NotFound (404) when the image was deleted meanwhile.
    let deleted = || Error::not_found(format!("No image found with ID {id}"));
    if !db::image::lock(&mut tx, id).await.map_err(db_err)? {
        return Err(deleted());
    }
    let row = db::image::get(&mut *tx, id)
        .await
        .map_err(db_err)?
        .ok_or_else(deleted)?;
    let left = svc.bytes_left(&mut tx, row.owner.as_deref(), id).await?;
    if size > left {
        return Err(receive_error(
            ReceiveError::TooLarge(left),
            left,
            svc.cfg.image_size_cap,
        ));
    }
    if !db::image::set_reserved(&mut tx, id, "uploading", size as i64)
        .await
        .map_err(db_err)?
    {
        return Err(gone());
    }
    tx.commit().await.map_err(|e| Error::internal(&e))
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

/// Image id → (task id, the import's task).
type Running = HashMap<String, (String, tokio::task::JoinHandle<()>)>;

/// The imports in progress: a bounded number run at once, the others wait
/// for a slot; each can be cancelled by its image's id.
pub struct Imports {
    slots: Arc<tokio::sync::Semaphore>,
    running: Arc<Mutex<Running>>,
}

impl Imports {
    /// Room for `max_concurrent` imports at once (at least one).
    pub fn new(max_concurrent: usize) -> Imports {
        Imports {
            slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1))),
            running: Arc::default(),
        }
    }

    /// How many imports are running or waiting.
    pub fn len(&self) -> usize {
        self.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no import is running or waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `work` once a slot is free, tracked under `image_id`.
    fn spawn<F>(&self, image_id: &str, task_id: &str, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let slots = self.slots.clone();
        let running = self.running.clone();
        let (image, task) = (image_id.to_string(), task_id.to_string());
        let (image2, task2) = (image.clone(), task.clone());
        // The map is locked across the spawn, so the task cannot remove its
        // entry before it is inserted.
        let mut map = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let handle = tokio::spawn(async move {
            if let Ok(_slot) = slots.acquire_owned().await {
                work.await;
            }
            let mut map = running.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&image2).is_some_and(|(t, _)| *t == task2) {
                map.remove(&image2);
            }
        });
        map.insert(image, (task, handle));
    }

    /// Cancels image `id`'s import, if one is running or waiting, and
    /// waits (briefly) until it has stopped: its temporary file is gone and
    /// it writes nothing more.
    pub async fn cancel(&self, id: &str) {
        let entry = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some((_, handle)) = entry {
            handle.abort();
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
    }
}

/// `POST /v2/images/{id}/import`: checks the preconditions, moves the
/// image to `importing` and records the task in one transaction, and runs
/// the import as a tracked task.
pub async fn start_import(
    svc: &Arc<Images>,
    ctx: &AuthContext,
    id: &str,
    method: Method,
) -> Result<String, Error> {
    if let Method::WebDownload(uri) = &method {
        // The caller must see the image before a URL of theirs is looked
        // up; the checks are made again on the locked row below.
        let (_, target) = svc.visible(ctx, id).await?;
        svc.policy.enforce("modify_image", ctx, &target)?;
        // The URL's form and its addresses are checked now so a refused
        // URL is the caller's 400; the fetch checks again (and checks every
        // redirect) when it runs.
        let url = super::fetch::parse_url(uri)
            .map_err(|m| Error::bad_request(format!("Invalid web-download URI: {m}.")))?;
        super::fetch::resolve(&url, svc.fetcher.allow_loopback())
            .await
            .map_err(|m| Error::bad_request(format!("Invalid web-download URI: {m}.")))?;
    }
    let mut tx = svc.pool.begin().await.map_err(|e| Error::internal(&e))?;
    let (image, target) = svc.locked(&mut tx, ctx, id).await?;
    svc.policy.enforce("modify_image", ctx, &target)?;
    require_formats(&image)?;
    let from = match &method {
        Method::GlanceDirect => {
            if image.row.status != "uploading" || !svc.staging.exists(id) {
                return Err(Error::conflict(
                    "Image needs to be staged before 'glance-direct' method can be used",
                ));
            }
            "uploading"
        }
        Method::WebDownload(_) => {
            if image.row.status != "queued" {
                return Err(Error::conflict(format!(
                    "Image needs to be in 'queued' state to use 'web-download' method, not '{}'",
                    image.row.status
                )));
            }
            "queued"
        }
    };
    // A staged file keeps its reservation through the import.
    if !db::image::begin_transfer(
        &mut tx,
        id,
        image.row.revision,
        from,
        "importing",
        image.row.reserved,
    )
    .await
    .map_err(db_err)?
    {
        return Err(Error::conflict(format!(
            "Image status transition from {from} to importing is not allowed"
        )));
    }
    let task_id = store::new_uuid();
    let now = store::now_micros();
    db::image::put_properties(
        &mut tx,
        id,
        &[
            ("os_glance_import_task", Some(task_id.as_str())),
            ("os_glance_importing_to_stores", Some(svc.store.id())),
            ("os_glance_failed_import", Some("")),
        ],
    )
    .await
    .map_err(db_err)?;
    db::task::insert(
        &mut tx,
        &db::task::TaskRow {
            id: task_id.clone(),
            image_id: id.to_string(),
            owner: image.row.owner.clone(),
            status: "pending".into(),
            method: method.name().into(),
            message: String::new(),
            created_at: now,
            updated_at: now,
        },
    )
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(|e| Error::internal(&e))?;
    let svc2 = svc.clone();
    let tid = task_id.clone();
    let limits = svc.cfg.import_limits.clone();
    svc.imports.spawn(id, &task_id, async move {
        let id = image.row.id.as_str();
        let _ = db::task::start(&svc2.pool, &tid).await;
        let result = tokio::time::timeout(
            limits.total_timeout,
            run_import(&svc2, &image, &method, limits.idle_timeout),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the import did not finish within {} s (the import time limit)",
                limits.total_timeout.as_secs_f64()
            ))
        });
        match result {
            Ok(()) => {
                let _ = db::task::finish(&svc2.pool, &tid, "success", "").await;
            }
            Err(message) => {
                tracing::info!(image = %id, %message, "image import failed");
                import_failed(&svc2, id, Some(&tid), &message).await;
            }
        }
    });
    Ok(task_id)
}

/// Records a failed import the way Glance does: the image goes back to
/// `queued`, `os_glance_failed_import` names the store, staged data is
/// deleted (and its reservation given up), and the task says why.
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

/// A body stream that fails once no data arrived for `idle`.
fn idle_limited<S, E>(stream: S, idle: Duration) -> impl Stream<Item = Result<Bytes, String>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    futures_util::stream::unfold(Some(stream), move |state| async move {
        let mut s = state?;
        match tokio::time::timeout(idle, s.next()).await {
            Ok(Some(Ok(b))) => Some((Ok(b), Some(s))),
            Ok(Some(Err(e))) => Some((Err(e.to_string()), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(format!(
                    "the source sent no data for {} s (the import idle time limit)",
                    idle.as_secs_f64()
                )),
                None,
            )),
        }
    })
}

async fn run_import(
    svc: &Arc<Images>,
    image: &Image,
    method: &Method,
    idle: Duration,
) -> Result<(), String> {
    let id = image.row.id.as_str();
    let disk_format = image.row.disk_format.clone().unwrap_or_default();
    let left = {
        let mut tx = svc.pool.begin().await.map_err(|e| e.to_string())?;
        let left = svc
            .bytes_left(&mut tx, image.row.owner.as_deref(), id)
            .await
            .map_err(|e| e.message)?;
        let _ = tx.rollback().await;
        left
    };
    match method {
        Method::GlanceDirect => {
            let path = svc.staging.path(id).map_err(|e| e.to_string())?;
            let digest = blob::digest_file(path.clone())
                .await
                .map_err(|e| format!("reading the staged data failed: {e}"))?;
            let inspection = inspect(&disk_format, path.clone(), digest.size)
                .await
                .map_err(|e| e.message)?;
            svc.store.adopt(&path, id).map_err(|e| e.to_string())?;
            let data = data_of(&digest, &inspection, svc.store.id());
            activate(svc, id, "importing", &data, true)
                .await
                .map_err(|e| e.message)?;
        }
        Method::WebDownload(uri) => {
            let (stream, length) = svc.fetcher.open(uri).await?;
            // The size the source announces is reserved before anything is
            // written (refused at once if the quota has no room for it);
            // the body grows the reservation as it passes it.
            let reserved = match length {
                Some(n) => extend_reservation(svc, id, "importing", n, n)
                    .await
                    .map_err(|e| e.message)?,
                None => 0,
            };
            let mut temp: TempBlob = svc.store.temp().map_err(|e| e.to_string())?;
            let body = idle_limited(stream, idle);
            let digest =
                receive_metered(svc, id, "importing", reserved, left, None, body, &mut temp)
                    .await
                    .map_err(|e| e.message)?;
            let inspection = inspect(&disk_format, temp.path().to_path_buf(), digest.size)
                .await
                .map_err(|e| e.message)?;
            svc.store.commit(temp, id).map_err(|e| e.to_string())?;
            let data = data_of(&digest, &inspection, svc.store.id());
            activate(svc, id, "importing", &data, true)
                .await
                .map_err(|e| e.message)?;
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
