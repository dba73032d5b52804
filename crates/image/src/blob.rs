//! Image data at rest: the [`ImageStore`] trait and its first
//! implementation, [`FileStore`] (`data_dir/images/<id>`).
//!
//! Data arrives as a stream of chunks. [`receive`] writes them to a
//! temporary file in the store's own directory while computing the MD5
//! (`checksum`) and SHA-512 (`os_hash_value`) digests and counting bytes;
//! when the stream ends the file is fsynced, and only then can it be
//! [committed](ImageStore::commit), which is an atomic rename. A temporary
//! file that is never committed — the client went away, the data was
//! refused, the server was cancelled mid-request — is removed when its
//! [`TempBlob`] is dropped, so no partial data is ever visible under an
//! image's name. Memory stays constant whatever the image size: at most a
//! few chunks are in flight between the network and the disk.
//!
//! The disk writes and the two digests run on three blocking threads (the
//! writer, MD5, SHA-512), fed through bounded channels with 1 MiB batches
//! of the network's own chunks, shared by reference count rather than
//! copied; so with cores to spare an upload goes at the speed of the slower
//! digest, and the async runtime only moves pointers. A flusher thread
//! pushes written data to the disk as it goes, so the final fsync waits
//! for the last few MiB only. MD5 is `md-5` with its assembly backend,
//! SHA-512 is `ring`'s (assembly from BoringSSL): both the fastest
//! implementations available as crates for these CPUs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::Digest as _;

/// What [`receive`] learnt about the data it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    /// MD5, lowercase hex (Glance's `checksum`).
    pub md5: String,
    /// SHA-512, lowercase hex (Glance's `os_hash_value`, `os_hash_algo`
    /// `sha512`).
    pub sha512: String,
}

/// Where image data is kept. Object storage will be a second
/// implementation; the API layer knows only this trait.
pub trait ImageStore: Send + Sync + 'static {
    /// The store's identifier, as `/v2/info/stores` lists it.
    fn id(&self) -> &'static str;
    /// A new temporary file to receive data into. It lives where
    /// [`commit`](Self::commit) can make it visible atomically.
    fn temp(&self) -> std::io::Result<TempBlob>;
    /// Makes a fully written and synced temporary file the data of image
    /// `id`, replacing any previous data, atomically.
    fn commit(&self, temp: TempBlob, id: &str) -> std::io::Result<()>;
    /// Moves a complete file from elsewhere on this host (the import
    /// staging area) into the store as the data of image `id`.
    fn adopt(&self, path: &Path, id: &str) -> std::io::Result<()>;
    /// Opens image `id`'s data for reading.
    fn open(&self, id: &str) -> std::io::Result<std::fs::File>;
    /// Deletes image `id`'s data; `Ok(false)` if there was none.
    fn delete(&self, id: &str) -> std::io::Result<bool>;
}

/// A temporary file that is removed on drop unless it was committed.
#[derive(Debug)]
pub struct TempBlob {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl TempBlob {
    /// Where the data is while it is being received and inspected.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Marks the file as moved away: drop no longer removes anything.
    fn disarm(mut self) -> PathBuf {
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A directory of files named by image id.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

const TEMP_PREFIX: &str = ".tmp-";

impl FileStore {
    /// Opens (creating) the directory and removes temporary files left by a
    /// process that died mid-upload.
    pub fn open(dir: PathBuf) -> std::io::Result<FileStore> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(FileStore { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of image `id`'s file. Ids are validated UUIDs before they
    /// get here; anything else is refused so no name can leave the directory.
    pub fn path(&self, id: &str) -> std::io::Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an image id",
            ));
        }
        Ok(self.dir.join(id))
    }

    /// Whether image `id` has data here.
    pub fn exists(&self, id: &str) -> bool {
        self.path(id).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Names in the directory that are not temporary files.
    pub fn ids(&self) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if !name.starts_with(TEMP_PREFIX) {
                out.push(name);
            }
        }
        Ok(out)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl ImageStore for FileStore {
    fn id(&self) -> &'static str {
        "file"
    }

    fn temp(&self) -> std::io::Result<TempBlob> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self
            .dir
            .join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(TempBlob {
            path,
            file: Some(file),
        })
    }

    fn commit(&self, temp: TempBlob, id: &str) -> std::io::Result<()> {
        let dest = self.path(id)?;
        std::fs::rename(temp.path(), &dest)?;
        temp.disarm();
        sync_dir(&self.dir)
    }

    fn adopt(&self, path: &Path, id: &str) -> std::io::Result<()> {
        let dest = self.path(id)?;
        match std::fs::rename(path, &dest) {
            Ok(()) => {}
            // Another filesystem: copy into a temporary file here, then
            // commit it, so the store never shows a partial file.
            Err(e) if e.raw_os_error() == Some(18) => {
                let temp = self.temp()?;
                std::fs::copy(path, temp.path())?;
                std::fs::File::open(temp.path())?.sync_all()?;
                self.commit(temp, id)?;
                std::fs::remove_file(path)?;
            }
            Err(e) => return Err(e),
        }
        sync_dir(&self.dir)
    }

    fn open(&self, id: &str) -> std::io::Result<std::fs::File> {
        std::fs::File::open(self.path(id)?)
    }

    fn delete(&self, id: &str) -> std::io::Result<bool> {
        match std::fs::remove_file(self.path(id)?) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Why [`receive`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The incoming stream failed: the client disconnected or sent a
    /// malformed body.
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    /// More than the allowed number of bytes arrived.
    #[error("the data is larger than the {0} bytes allowed")]
    TooLarge(u64),
    /// Writing to the store failed.
    #[error("writing the image data failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Bytes gathered from the network before a batch goes to the workers.
/// Large, so a 2 GiB image is 2048 hand-offs per worker, not a million.
const BATCH: usize = 1 << 20;
/// Batches that may wait for each worker: with [`BATCH`], a few MiB in
/// flight per upload whatever its size.
const QUEUE: usize = 4;
/// Bytes written between two requests to the flusher thread to push the
/// written data to the disk, so the fsync that ends an upload waits only
/// for the last few of them instead of the whole image.
const FLUSH_EVERY: u64 = 64 << 20;

/// Chunks at least this large go into a batch by reference; smaller ones
/// are copied together (see [`receive`]). Over loopback or a fast network
/// hyper hands over chunks of a few hundred KiB, which are never copied.
const SHARE_FROM: usize = 64 << 10;

/// The network's chunks, shared by reference count between the writer and
/// the two hashers: a large chunk is never copied to build a batch.
type Batch = Arc<Vec<Bytes>>;
type BatchTx = tokio::sync::mpsc::Sender<Batch>;
type BatchRx = tokio::sync::mpsc::Receiver<Batch>;

fn batch_channel() -> (BatchTx, BatchRx) {
    tokio::sync::mpsc::channel(QUEUE)
}

/// MD5 and SHA-512 of the same bytes, each on its own blocking thread, so
/// hashing both costs the time of the slower one when two cores are free.
struct Hashers {
    md5: (BatchTx, tokio::task::JoinHandle<String>),
    sha512: (BatchTx, tokio::task::JoinHandle<String>),
}

impl Hashers {
    fn start() -> Hashers {
        let (mtx, mut mrx) = batch_channel();
        let md5 = tokio::task::spawn_blocking(move || {
            let mut h = md5::Md5::new();
            while let Some(batch) = mrx.blocking_recv() {
                batch.iter().for_each(|c| h.update(c));
            }
            hex(&h.finalize())
        });
        let (stx, mut srx) = batch_channel();
        let sha512 = tokio::task::spawn_blocking(move || {
            let mut h = ring::digest::Context::new(&ring::digest::SHA512);
            while let Some(batch) = srx.blocking_recv() {
                batch.iter().for_each(|c| h.update(c));
            }
            hex(h.finish().as_ref())
        });
        Hashers {
            md5: (mtx, md5),
            sha512: (stx, sha512),
        }
    }

    /// Hands a batch to both hashers; `false` if one is gone.
    async fn feed(&self, batch: &Batch) -> bool {
        self.md5.0.send(batch.clone()).await.is_ok()
            && self.sha512.0.send(batch.clone()).await.is_ok()
    }

    /// The same from a blocking thread.
    fn blocking_feed(&self, batch: &Batch) -> bool {
        self.md5.0.blocking_send(batch.clone()).is_ok()
            && self.sha512.0.blocking_send(batch.clone()).is_ok()
    }

    /// Waits for both digests: (MD5, SHA-512), lowercase hex.
    async fn finish(self) -> std::io::Result<(String, String)> {
        let Hashers {
            md5: (mtx, md5),
            sha512: (stx, sha512),
        } = self;
        drop((mtx, stx));
        let join = |e: tokio::task::JoinError| std::io::Error::other(e.to_string());
        Ok((md5.await.map_err(join)?, sha512.await.map_err(join)?))
    }
}

/// The writer thread: writes every batch in order and keeps the disk
/// busy with what is already written (see [`FLUSH_EVERY`]). Returns the
/// file, written but not yet synced.
fn write_batches(mut file: std::fs::File, mut rx: BatchRx) -> std::io::Result<std::fs::File> {
    let flush_handle = file.try_clone()?;
    // A one-place queue: a request made while the flusher is busy is
    // merged with the one waiting.
    let (flush, flush_rx) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::scope(|scope| {
        let flusher = scope.spawn(move || -> std::io::Result<()> {
            while flush_rx.recv().is_ok() {
                flush_handle.sync_data()?;
            }
            Ok(())
        });
        let mut unflushed = 0u64;
        let written = (|| {
            while let Some(batch) = rx.blocking_recv() {
                for chunk in batch.iter() {
                    file.write_all(chunk)?;
                    unflushed += chunk.len() as u64;
                }
                if unflushed >= FLUSH_EVERY {
                    // Full or gone: either way nothing to wait for here.
                    let _ = flush.try_send(());
                    unflushed = 0;
                }
            }
            Ok(())
        })();
        drop(flush);
        let flushed = flusher
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the flusher thread panicked")));
        written.and(flushed)
    })?;
    Ok(file)
}

/// Writes `stream` into `temp` while hashing and counting, fsyncs, and
/// returns the digests. Stops with [`ReceiveError::TooLarge`] as soon as
/// more than `limit` bytes arrived.
///
/// Three blocking threads work on each batch at once: the writer, MD5 and
/// SHA-512; the async task only moves reference-counted chunks. When the
/// stream ends, the file is fsynced; most of it is on disk already.
pub async fn receive<S, E>(
    stream: S,
    temp: &mut TempBlob,
    limit: Option<u64>,
) -> Result<Digest, ReceiveError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let file = temp
        .file
        .take()
        .ok_or_else(|| std::io::Error::other("temporary file already used"))?;
    let (wtx, wrx) = batch_channel();
    let writer = tokio::task::spawn_blocking(move || write_batches(file, wrx));
    let hashers = Hashers::start();
    let mut size: u64 = 0;
    // The batch being gathered: large chunks by reference, runs of small
    // ones copied into `small` (so a client sending tiny chunks cannot make
    // a batch a million entries long, each pinning a network buffer).
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0usize;
    let mut small = bytes::BytesMut::new();
    let mut stream = std::pin::pin!(stream);
    let mut failure: Option<ReceiveError> = None;
    let mut workers_alive = true;
    while let Some(item) = stream.next().await {
        let chunk = match item {
            Ok(c) => c,
            Err(e) => {
                failure = Some(ReceiveError::Interrupted(e.to_string()));
                break;
            }
        };
        size += chunk.len() as u64;
        if let Some(l) = limit {
            if size > l {
                failure = Some(ReceiveError::TooLarge(l));
                break;
            }
        }
        pending_len += chunk.len();
        if chunk.len() >= SHARE_FROM {
            if !small.is_empty() {
                pending.push(small.split().freeze());
            }
            pending.push(chunk);
        } else {
            small.extend_from_slice(&chunk);
        }
        if pending_len >= BATCH {
            if !small.is_empty() {
                pending.push(small.split().freeze());
            }
            let batch = Arc::new(std::mem::take(&mut pending));
            pending_len = 0;
            // A worker that stopped (a write error) dropped its receiver:
            // the error is collected below.
            if wtx.send(batch.clone()).await.is_err() || !hashers.feed(&batch).await {
                workers_alive = false;
                break;
            }
        }
    }
    if !small.is_empty() {
        pending.push(small.freeze());
    }
    if failure.is_none() && workers_alive && !pending.is_empty() {
        let batch = Arc::new(pending);
        let _ = wtx.send(batch.clone()).await;
        hashers.feed(&batch).await;
    }
    drop(wtx);
    let join = |e: tokio::task::JoinError| std::io::Error::other(e.to_string());
    let written = writer.await.map_err(join)?;
    let (md5, sha512) = hashers.finish().await?;
    if let Some(f) = failure {
        return Err(f);
    }
    let file = written?;
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(join)??;
    Ok(Digest { size, md5, sha512 })
}

/// Computes the digests of a complete file (a staged import): read on a
/// blocking thread in `BATCH`-sized pieces, hashed by the same two
/// threads as an upload.
pub async fn digest_file(path: PathBuf) -> std::io::Result<Digest> {
    let hashers = Hashers::start();
    let (hashers, size) = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        let mut size = 0u64;
        loop {
            let mut buf = bytes::BytesMut::zeroed(BATCH);
            let mut n = 0;
            // Fill the piece (a read may return less than asked).
            while n < BATCH {
                match std::io::Read::read(&mut f, &mut buf[n..])? {
                    0 => break,
                    m => n += m,
                }
            }
            if n == 0 {
                break;
            }
            size += n as u64;
            buf.truncate(n);
            if !hashers.blocking_feed(&Arc::new(vec![buf.freeze()])) {
                break;
            }
            if n < BATCH {
                break;
            }
        }
        Ok::<_, std::io::Error>((hashers, size))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    let (md5, sha512) = hashers.finish().await?;
    Ok(Digest { size, md5, sha512 })
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<Result<Bytes, String>>) -> impl Stream<Item = Result<Bytes, String>> {
        futures_util::stream::iter(parts)
    }

    #[tokio::test]
    async fn receive_hashes_counts_and_commits_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("images")).unwrap();
        let mut temp = store.temp().unwrap();
        let d = receive(
            chunks(vec![
                Ok(Bytes::from_static(b"hello ")),
                Ok(Bytes::from_static(b"world")),
            ]),
            &mut temp,
            None,
        )
        .await
        .unwrap();
        assert_eq!(d.size, 11);
        assert_eq!(d.md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert!(d.sha512.starts_with("309ecc489c12d6eb4cc40f50c902f2b4"));
        let id = "0b7a7c56-8a4e-4f8b-9a39-6d4b1b1c2a11";
        assert!(!store.exists(id));
        store.commit(temp, id).unwrap();
        assert_eq!(
            std::fs::read(store.path(id).unwrap()).unwrap(),
            b"hello world"
        );
        assert_eq!(store.ids().unwrap(), vec![id.to_string()]);
        assert!(store.delete(id).unwrap());
        assert!(!store.delete(id).unwrap());
    }

    #[tokio::test]
    async fn digests_cover_every_byte_in_order_across_batches() {
        // Irregular chunks straddling batch boundaries, 2.5 batches in all,
        // checked against RustCrypto's SHA-512 as an independent reference.
        let data: Vec<u8> = (0..BATCH * 5 / 2 + 12_345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let want_md5 = hex(&md5::Md5::digest(&data));
        let want_sha = hex(&sha2::Sha512::digest(&data));
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("images")).unwrap();
        let mut temp = store.temp().unwrap();
        // Sizes on both sides of SHARE_FROM, so shared and copied chunks
        // interleave.
        let sizes = [70_001, 100, 5_000, 300_000, 1, 65_535, 65_536, 9];
        let mut parts = Vec::new();
        let mut rest = &data[..];
        for n in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at((*n).min(rest.len()));
            parts.push(Ok(Bytes::copy_from_slice(a)));
            rest = b;
        }
        let d = receive(chunks(parts), &mut temp, None).await.unwrap();
        assert_eq!(d.size, data.len() as u64);
        assert_eq!(
            (d.md5.as_str(), d.sha512.as_str()),
            (&*want_md5, &*want_sha)
        );
        assert!(std::fs::read(temp.path()).unwrap() == data);
        // A staged file hashes the same.
        let f = digest_file(temp.path().to_path_buf()).await.unwrap();
        assert_eq!(f, d);
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let e = digest_file(empty).await.unwrap();
        assert_eq!(e.size, 0);
        assert_eq!(e.md5, "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[tokio::test]
    async fn an_interrupted_or_oversized_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("images")).unwrap();
        let mut temp = store.temp().unwrap();
        let err = receive(
            chunks(vec![Ok(Bytes::from_static(b"half")), Err("reset".into())]),
            &mut temp,
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ReceiveError::Interrupted(_)));
        drop(temp);
        let mut temp = store.temp().unwrap();
        let err = receive(
            chunks(vec![Ok(Bytes::from(vec![0u8; 100]))]),
            &mut temp,
            Some(10),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ReceiveError::TooLarge(10)));
        drop(temp);
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0);
    }

    #[test]
    fn stale_temporary_files_are_swept_and_ids_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("images");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(".tmp-abc"), b"x").unwrap();
        let store = FileStore::open(d.clone()).unwrap();
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        assert!(store.path("../etc/passwd").is_err());
        assert!(store.path("").is_err());
    }
}
