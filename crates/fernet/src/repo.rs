//! Keystone-style Fernet key repository on disk.
//!
//! Layout (identical to Keystone's, so repositories can be shared or migrated):
//! a directory of files named by non-negative integers, each holding one key in
//! url-safe base64. `0` is the *staged* key, the highest number is the *primary*
//! key, and everything in between is a *secondary* key.
//!
//! Why a staged key: in a cluster, keys are copied to every node before use. The
//! key that the next rotation will promote is already present (as `0`) everywhere,
//! so tokens made with the new primary on the node that rotated first are accepted
//! by the others before they have caught up.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::{Error, Key, KeySet};

/// File name of the staged key.
const STAGED: u64 = 0;

/// Prefix of the temporary files used for atomic writes. It can never parse as an
/// integer, so [`KeyRepository::load`] skips half-written keys left by a crash.
const TEMP_PREFIX: &str = ".tmp-";

/// Key files are 44 bytes; anything much bigger is not a key, and refusing it before
/// reading keeps a stray large file from being slurped into memory.
const MAX_KEY_FILE_LEN: u64 = 1024;

/// A Keystone-compatible key repository rooted at one directory.
///
/// Rotation is not locked against a concurrent rotation of the same directory (as in
/// Keystone, run it from one place at a time); readers are safe at any moment
/// because every write is an atomic rename and the staged key is replaced, never
/// removed.
#[derive(Clone, Debug)]
pub struct KeyRepository {
    dir: PathBuf,
}

impl KeyRepository {
    /// A repository in `dir`. Nothing is touched on disk until a method is called.
    pub fn new(dir: impl Into<PathBuf>) -> KeyRepository {
        KeyRepository { dir: dir.into() }
    }

    /// The repository's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (mode 0700, parents included) if it is missing and, if
    /// it holds no keys, writes a staged key `0` and a primary key `1` (mode 0600),
    /// like `keystone-manage fernet_setup`.
    ///
    /// Idempotent: a repository that already has keys is left exactly as it is
    /// (permissions included), so running it at every start-up is safe.
    pub fn setup(&self) -> Result<(), Error> {
        if !self.dir.exists() {
            create_private_dir(&self.dir)?;
        }
        if self.key_files()?.is_empty() {
            self.write_key(STAGED, &Key::generate())?;
            self.write_key(1, &Key::generate())?;
        }
        Ok(())
    }

    /// Reads every key, ordered for decryption: primary (highest number) first, then
    /// the secondaries newest first, then the staged key `0`.
    ///
    /// Files whose names are not canonical non-negative decimal integers (`README`,
    /// temporary files, `01`, `+1`, ...) and non-files are ignored, as Keystone
    /// ignores them. Fails with [`Error::NoPrimaryKey`] if fewer than two keys are
    /// present and with [`Error::InvalidKey`] naming the file if one is not a key.
    pub fn load(&self) -> Result<KeySet, Error> {
        let files = self.key_files()?;
        if files.len() < 2 {
            return Err(Error::NoPrimaryKey);
        }
        // Highest number first; the staged key (0, the smallest) is naturally last.
        let mut keys = files
            .values()
            .rev()
            .map(|path| read_key(path))
            .collect::<Result<Vec<Key>, Error>>()?;
        let primary = keys.remove(0);
        Ok(KeySet::new(primary, keys))
    }

    /// Rotates keys the way `keystone-manage fernet_rotate` does: the staged key `0`
    /// becomes the new primary (highest number + 1), a freshly generated key becomes
    /// the new staged key `0`, and then the lowest-numbered secondaries are removed
    /// until at most `max_active_keys` keys remain (staged + primary + secondaries).
    /// Returns the rotated key set as read back from disk.
    ///
    /// The new primary is written before the staged key is replaced, so a reader
    /// never sees a repository missing the key that other nodes may already be
    /// encrypting with. Each file is written atomically (temp file in the same
    /// directory, fsync, rename, fsync of the directory).
    pub fn rotate(&self, max_active_keys: usize) -> Result<KeySet, Error> {
        if max_active_keys < 3 {
            return Err(Error::BadMaxActiveKeys);
        }
        // Validates every key file before anything is changed.
        self.load()?;
        let files = self.key_files()?;
        let staged_path = files.get(&STAGED).ok_or(Error::NoStagedKey)?;
        let staged = read_key(staged_path)?;
        let (&highest, highest_path) = files
            .last_key_value()
            .expect("load() checked that there are at least two keys");
        let new_primary = highest.checked_add(1).ok_or_else(|| {
            Error::InvalidKey(format!("{} (key number too large)", highest_path.display()))
        })?;

        self.write_key(new_primary, &staged)?;
        self.write_key(STAGED, &Key::generate())?;

        // Oldest first; the staged key is not counted here, hence the `- 1`.
        let mut active: Vec<u64> = files
            .keys()
            .copied()
            .filter(|&n| n != STAGED)
            .chain([new_primary])
            .collect();
        let excess = active.len().saturating_sub(max_active_keys - 1);
        for n in active.drain(..excess) {
            let path = self.dir.join(n.to_string());
            match fs::remove_file(&path) {
                Ok(()) => {}
                // Already gone (removed by hand or by another node's tooling): the
                // goal is reached either way.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        if excess > 0 {
            sync_dir(&self.dir)?;
        }
        self.load()
    }

    /// A cheap fingerprint of the key files (number, size, mtime and, on Unix, inode
    /// of each), so a long-running server can poll it and reload the keys only when
    /// the repository changed on disk, e.g. after a rotation synced from another
    /// node. Temporary files are not included, so an in-progress write does not
    /// trigger a reload of an unchanged key set.
    ///
    /// The value is only meaningful compared with another fingerprint of the same
    /// directory taken by this crate.
    pub fn fingerprint(&self) -> Result<u64, Error> {
        let mut hasher = Sha256::new();
        for (n, path) in self.key_files()? {
            let meta = fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            let mtime = meta
                .modified()
                .map_err(|e| Error::io(&path, e))?
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            hasher.update(n.to_be_bytes());
            hasher.update(meta.len().to_be_bytes());
            hasher.update(mtime.as_secs().to_be_bytes());
            hasher.update(mtime.subsec_nanos().to_be_bytes());
            // A rename-over (every write here) changes the inode even when size and a
            // coarse mtime happen to stay the same.
            #[cfg(unix)]
            hasher.update(std::os::unix::fs::MetadataExt::ino(&meta).to_be_bytes());
        }
        let digest = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Ok(u64::from_be_bytes(first))
    }

    /// The key files by number. Ignores entries whose names are not canonical
    /// integers and entries that are not regular files (after following symlinks,
    /// since deployments sometimes link key files from a secrets mount).
    fn key_files(&self) -> Result<BTreeMap<u64, PathBuf>, Error> {
        let io_err = |e| Error::io(&self.dir, e);
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let Some(n) = entry.file_name().to_str().and_then(parse_key_number) else {
                continue;
            };
            let path = entry.path();
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    files.insert(n, path);
                }
                Ok(_) => {}
                // Removed between listing and stat (a concurrent rotation): skip.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        Ok(files)
    }

    /// Atomically writes key file `n`: a crash leaves either the old file or the new
    /// one, never a truncated key that would make every node fail to load.
    fn write_key(&self, n: u64, key: &Key) -> Result<(), Error> {
        let path = self.dir.join(n.to_string());
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        let tmp_err = |e| Error::io(&path, e);
        // tempfile already creates files 0600 on Unix; set it explicitly because the
        // mode of a key file is a security property, not an implementation detail.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(tmp_err)?;
        }
        // No trailing newline: byte-for-byte what Keystone writes.
        tmp.write_all(key.to_base64().as_bytes()).map_err(tmp_err)?;
        tmp.as_file().sync_all().map_err(tmp_err)?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        sync_dir(&self.dir)
    }
}

/// Parses a key file name: canonical decimal only ("0", "17"; not "017", "+1"), so
/// two files can never claim the same number.
fn parse_key_number(name: &str) -> Option<u64> {
    let canonical = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_digit())
        && (name == "0" || !name.starts_with('0'));
    if canonical {
        name.parse().ok()
    } else {
        None
    }
}

/// Reads and parses one key file, reporting any failure to parse as
/// [`Error::InvalidKey`] with the file's path.
fn read_key(path: &Path) -> Result<Key, Error> {
    let invalid = || Error::InvalidKey(path.display().to_string());
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(invalid());
    }
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
    Key::from_base64(text).map_err(|_| invalid())
}

/// Creates `dir` and its missing parents, owner-only, since it will hold secrets.
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir).map_err(|e| Error::io(dir, e))?;
        // The umask can only remove bits, but set the mode explicitly so the result
        // does not depend on it.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(dir, e))
    }
    #[cfg(not(unix))]
    {
        builder.create(dir).map_err(|e| Error::io(dir, e))
    }
}

/// Flushes the directory entry changes (renames, removals) so they survive a power
/// loss; without it the renamed file's data is durable but its name may not be.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))
    }
    // Directories cannot be opened as files elsewhere; rename is still atomic.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;

    /// Sorted key file names present in the directory (temp files excluded).
    fn names(repo: &KeyRepository) -> Vec<u64> {
        repo.key_files().unwrap().into_keys().collect()
    }

    fn key_at(repo: &KeyRepository, n: u64) -> Key {
        read_key(&repo.dir().join(n.to_string())).unwrap()
    }

    fn all_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn new_repo() -> (tempfile::TempDir, KeyRepository) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = KeyRepository::new(tmp.path().join("fernet-keys"));
        (tmp, repo)
    }

    #[test]
    fn setup_creates_staged_and_primary() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        assert_eq!(all_entries(repo.dir()), ["0", "1"]);
        let set = repo.load().unwrap();
        assert_eq!(set.len(), 2);
        assert_ne!(key_at(&repo, 0), key_at(&repo, 1));
        // Key files are exactly 44 base64 characters, no newline, like Keystone's.
        assert_eq!(fs::read(repo.dir().join("1")).unwrap().len(), 44);
    }

    #[cfg(unix)]
    #[test]
    fn setup_and_rotate_use_private_modes() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        repo.rotate(5).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(repo.dir()), 0o700);
        for n in names(&repo) {
            assert_eq!(mode(&repo.dir().join(n.to_string())), 0o600, "file {n}");
        }
    }

    #[test]
    fn setup_is_idempotent() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        repo.rotate(5).unwrap();
        let before: Vec<(u64, Key)> = names(&repo)
            .into_iter()
            .map(|n| (n, key_at(&repo, n)))
            .collect();
        let fp = repo.fingerprint().unwrap();
        repo.setup().unwrap();
        let after: Vec<(u64, Key)> = names(&repo)
            .into_iter()
            .map(|n| (n, key_at(&repo, n)))
            .collect();
        assert_eq!(before, after);
        assert_eq!(repo.fingerprint().unwrap(), fp);
    }

    #[test]
    fn setup_in_existing_empty_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = KeyRepository::new(tmp.path());
        repo.setup().unwrap();
        assert_eq!(names(&repo), [0, 1]);
    }

    #[test]
    fn rotate_promotes_staged_key() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        let old_staged = key_at(&repo, 0);
        let old_primary = key_at(&repo, 1);
        let set = repo.rotate(3).unwrap();
        assert_eq!(all_entries(repo.dir()), ["0", "1", "2"]);
        assert_eq!(key_at(&repo, 2), old_staged);
        assert_eq!(key_at(&repo, 1), old_primary);
        let new_staged = key_at(&repo, 0);
        assert_ne!(new_staged, old_staged);
        assert_ne!(new_staged, old_primary);
        assert_eq!(set.len(), 3);

        // The returned set encrypts with the promoted key...
        let token = set.encrypt(b"x", 1);
        assert!(KeySet::new(old_staged, vec![]).decrypt(&token).is_ok());
        // ...and still accepts tokens of the previous primary and the new staged key.
        for k in [old_primary, new_staged] {
            let t = KeySet::new(k, vec![]).encrypt(b"y", 2);
            assert_eq!(set.decrypt(&t).unwrap(), (b"y".to_vec(), 2));
        }
    }

    #[test]
    fn load_orders_primary_secondaries_newest_first_then_staged() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        repo.rotate(10).unwrap();
        repo.rotate(10).unwrap();
        assert_eq!(names(&repo), [0, 1, 2, 3]);
        let set = repo.load().unwrap();
        let expected = KeySet::new(
            key_at(&repo, 3),
            vec![key_at(&repo, 2), key_at(&repo, 1), key_at(&repo, 0)],
        );
        assert_eq!(set.keys_for_test(), expected.keys_for_test());
    }

    #[test]
    fn rotate_with_three_keeps_three_and_drops_oldest() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        let mut staged = key_at(&repo, 0);
        for round in 1..=6u64 {
            let set = repo.rotate(3).unwrap();
            let primary = round + 1;
            assert_eq!(
                all_entries(repo.dir()),
                [
                    "0".to_string(),
                    (primary - 1).to_string(),
                    primary.to_string()
                ],
                "round {round}"
            );
            assert_eq!(set.len(), 3);
            assert_eq!(key_at(&repo, primary), staged);
            staged = key_at(&repo, 0);
        }
    }

    #[test]
    fn rotate_with_larger_limit_grows_then_caps() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        for _ in 0..3 {
            repo.rotate(5).unwrap();
        }
        assert_eq!(names(&repo), [0, 1, 2, 3, 4]);
        repo.rotate(5).unwrap();
        assert_eq!(names(&repo), [0, 2, 3, 4, 5]);
        // Lowering the limit trims several secondaries at once.
        repo.rotate(3).unwrap();
        assert_eq!(names(&repo), [0, 5, 6]);
    }

    #[test]
    fn rotate_rejects_too_small_limit_without_touching_disk() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        let fp = repo.fingerprint().unwrap();
        for bad in [0, 1, 2] {
            assert!(matches!(repo.rotate(bad), Err(Error::BadMaxActiveKeys)));
        }
        assert_eq!(repo.fingerprint().unwrap(), fp);
        assert_eq!(names(&repo), [0, 1]);
    }

    #[test]
    fn rotate_needs_primary_and_staged_keys() {
        let (_tmp, repo) = new_repo();
        fs::create_dir(repo.dir()).unwrap();
        assert!(matches!(repo.rotate(3), Err(Error::NoPrimaryKey)));
        fs::write(repo.dir().join("1"), Key::generate().to_base64()).unwrap();
        fs::write(repo.dir().join("2"), Key::generate().to_base64()).unwrap();
        // Two keys but no staged one: loadable, but nothing to promote.
        assert_eq!(repo.load().unwrap().len(), 2);
        assert!(matches!(repo.rotate(3), Err(Error::NoStagedKey)));
        assert_eq!(names(&repo), [1, 2]);
    }

    #[test]
    fn rotation_on_one_controller_keeps_tokens_valid_across_nodes() {
        let tmp = tempfile::tempdir().unwrap();
        let a = KeyRepository::new(tmp.path().join("a"));
        let b = KeyRepository::new(tmp.path().join("b"));
        a.setup().unwrap();
        fs::create_dir(b.dir()).unwrap();
        for n in names(&a) {
            fs::copy(a.dir().join(n.to_string()), b.dir().join(n.to_string())).unwrap();
        }
        let b_set = b.load().unwrap();
        let b_token = b_set.encrypt(b"from b", 100);

        let a_set = a.rotate(3).unwrap();
        // A's new primary is B's staged key 0: B accepts A's new tokens before syncing.
        assert_eq!(key_at(&a, 2), key_at(&b, 0));
        let a_token = a_set.encrypt(b"from a", 200);
        assert_eq!(b_set.decrypt(&a_token).unwrap(), (b"from a".to_vec(), 200));
        // B's primary is now a secondary on A: A still accepts B's tokens.
        assert_eq!(a_set.decrypt(&b_token).unwrap(), (b"from b".to_vec(), 100));
    }

    #[test]
    fn fingerprint_changes_after_rotate_and_is_stable_otherwise() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        let fp1 = repo.fingerprint().unwrap();
        assert_eq!(repo.fingerprint().unwrap(), fp1);
        repo.rotate(3).unwrap();
        let fp2 = repo.fingerprint().unwrap();
        assert_ne!(fp1, fp2);
        repo.rotate(3).unwrap();
        let fp3 = repo.fingerprint().unwrap();
        assert_ne!(fp2, fp3);
        assert_ne!(fp1, fp3);
        // Non-key files do not count.
        fs::write(repo.dir().join(".tmp-leftover"), "junk").unwrap();
        assert_eq!(repo.fingerprint().unwrap(), fp3);
    }

    #[test]
    fn fingerprint_of_missing_dir_is_io_error_with_path() {
        let (_tmp, repo) = new_repo();
        let err = repo.fingerprint().unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("fernet-keys"), "{err}");
    }

    #[test]
    fn load_empty_dir_has_no_primary() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = KeyRepository::new(tmp.path());
        assert!(matches!(repo.load(), Err(Error::NoPrimaryKey)));
        // A single key is only a staged key: still no primary.
        fs::write(tmp.path().join("0"), Key::generate().to_base64()).unwrap();
        assert!(matches!(repo.load(), Err(Error::NoPrimaryKey)));
    }

    #[test]
    fn load_missing_dir_is_io_error() {
        let (_tmp, repo) = new_repo();
        assert!(matches!(repo.load(), Err(Error::Io { .. })));
    }

    #[test]
    fn load_garbage_key_names_the_file() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        fs::write(repo.dir().join("1"), "this is not a fernet key").unwrap();
        match repo.load() {
            Err(Error::InvalidKey(name)) => {
                assert!(name.ends_with("fernet-keys/1"), "{name}");
            }
            other => panic!("expected InvalidKey, got {other:?}"),
        }
        // Non-UTF-8 and oversized files are invalid keys too, not I/O errors.
        fs::write(repo.dir().join("1"), [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(repo.load(), Err(Error::InvalidKey(n)) if n.ends_with('1')));
        fs::write(repo.dir().join("1"), vec![b'A'; 4096]).unwrap();
        assert!(matches!(repo.load(), Err(Error::InvalidKey(n)) if n.ends_with('1')));
        // Rotation refuses to touch a repository with a broken key.
        assert!(matches!(repo.rotate(3), Err(Error::InvalidKey(_))));
        assert_eq!(names(&repo), [0, 1]);
    }

    #[test]
    fn load_ignores_non_key_entries_and_accepts_whitespace() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        let junk = Key::generate().to_base64();
        for name in [
            "README",
            ".tmp-abc123",
            "01",
            "+2",
            "-1",
            "1.bak",
            " 3",
            "99999999999999999999999",
        ] {
            fs::write(repo.dir().join(name), &junk).unwrap();
        }
        fs::create_dir(repo.dir().join("7")).unwrap();
        // A key written by hand with a trailing newline.
        let key5 = Key::generate();
        fs::write(repo.dir().join("5"), format!("{}\n", key5.to_base64())).unwrap();
        let set = repo.load().unwrap();
        assert_eq!(set.len(), 3);
        let token = set.encrypt(b"z", 3);
        assert!(KeySet::new(key5, vec![]).decrypt(&token).is_ok());
    }

    #[test]
    fn parse_key_number_is_canonical() {
        assert_eq!(parse_key_number("0"), Some(0));
        assert_eq!(parse_key_number("10"), Some(10));
        for bad in [
            "",
            "00",
            "01",
            "+1",
            "-1",
            "1a",
            "1 ",
            "18446744073709551616",
        ] {
            assert_eq!(parse_key_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn writes_leave_no_temp_files() {
        let (_tmp, repo) = new_repo();
        repo.setup().unwrap();
        // No temp file is left behind by successful writes.
        repo.rotate(3).unwrap();
        assert!(all_entries(repo.dir())
            .iter()
            .all(|n| !n.starts_with(TEMP_PREFIX)));
    }
}
