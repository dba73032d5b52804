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
//! The digests and the disk writes run on blocking threads (one for MD5 and
//! the writes, one for SHA-512), fed through bounded channels, so hashing
//! both digests costs about the time of the slower one, and the async
//! runtime only moves buffers.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// How many batches may wait between the network and each worker thread:
/// with [`BATCH`], at most a few MiB in flight per upload.
const QUEUE: usize = 8;
/// Bytes gathered from the network before they go to the workers.
const BATCH: usize = 256 << 10;

/// Writes `stream` into `temp` while hashing and counting, fsyncs, and
/// returns the digests. Stops with [`ReceiveError::TooLarge`] as soon as
/// more than `limit` bytes arrived.
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
    let (wtx, mut wrx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let (htx, mut hrx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    // Thread 1: MD5 and the writes. Thread 2: SHA-512.
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut file = file;
        let mut md5 = md5::Md5::new();
        while let Some(chunk) = wrx.blocking_recv() {
            md5.update(&chunk);
            file.write_all(&chunk)?;
        }
        file.sync_all()?;
        Ok(hex(&md5.finalize()))
    });
    let hasher = tokio::task::spawn_blocking(move || {
        let mut sha = sha2::Sha512::new();
        while let Some(chunk) = hrx.blocking_recv() {
            sha.update(&chunk);
        }
        hex(&sha.finalize())
    });
    let mut size: u64 = 0;
    let mut pending = bytes::BytesMut::with_capacity(BATCH);
    let mut stream = std::pin::pin!(stream);
    let mut failure: Option<ReceiveError> = None;
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
        // Network chunks are small (a few KiB); handing each to the worker
        // threads would cost two wake-ups per chunk. They are gathered into
        // BATCH-sized buffers first: one copy, a thousandth of the hand-offs.
        pending.extend_from_slice(&chunk);
        if pending.len() >= BATCH {
            let batch =
                std::mem::replace(&mut pending, bytes::BytesMut::with_capacity(BATCH)).freeze();
            // A worker that stopped (a write error) drops its receiver: the
            // error is collected below.
            if wtx.send(batch.clone()).await.is_err() || htx.send(batch).await.is_err() {
                break;
            }
        }
    }
    if failure.is_none() && !pending.is_empty() {
        let batch = pending.freeze();
        let _ = wtx.send(batch.clone()).await;
        let _ = htx.send(batch).await;
    }
    drop(wtx);
    drop(htx);
    let md5 = writer
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let sha512 = hasher
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Some(f) = failure {
        return Err(f);
    }
    Ok(Digest {
        size,
        md5: md5?,
        sha512,
    })
}

/// Computes the digests of a complete file (a staged import), on a
/// blocking thread.
pub async fn digest_file(path: PathBuf) -> std::io::Result<Digest> {
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        let mut md5 = md5::Md5::new();
        let mut sha = sha2::Sha512::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            md5.update(&buf[..n]);
            sha.update(&buf[..n]);
        }
        Ok(Digest {
            size,
            md5: hex(&md5.finalize()),
            sha512: hex(&sha.finalize()),
        })
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?
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
