//! The payload inside a Fernet token, and the key set that seals it.
//!
//! A token carries only what identifies it; roles, names and the catalog are
//! looked up at validation, so a role removed or a project disabled takes
//! effect at once. The payload is a compact binary layout of our own
//! (Keystone's payloads are not meant to be read by other services):
//!
//! ```text
//! u8 version (1) | u8 methods bitmask | id user | u8 scope kind [| id scope]
//! | i64 issued_at µs | i64 expires_at µs | 16B audit id | u8 has_parent [| 16B parent audit id]
//! | u8 has_app_cred [| id app cred]
//! id := u8 0 + 16 bytes (a 32-hex id) | u8 1 + u8 len + bytes (any other id)
//! ```

use std::path::PathBuf;
use std::sync::RwLock;

use base64::Engine;

const PAYLOAD_VERSION: u8 = 1;

/// Authentication methods, as a bitmask in the payload.
pub const METHOD_PASSWORD: u8 = 1;
pub const METHOD_TOKEN: u8 = 2;
pub const METHOD_APP_CRED: u8 = 4;

/// Method names in Keystone's spelling, in the order Keystone lists them.
pub fn method_names(mask: u8) -> Vec<&'static str> {
    let mut v = Vec::new();
    if mask & METHOD_PASSWORD != 0 {
        v.push("password");
    }
    if mask & METHOD_TOKEN != 0 {
        v.push("token");
    }
    if mask & METHOD_APP_CRED != 0 {
        v.push("application_credential");
    }
    v
}

/// What a token is scoped to, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeId {
    Unscoped,
    Project(String),
    Domain(String),
    System,
}

/// The decoded contents of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub methods: u8,
    pub user_id: String,
    pub scope: ScopeId,
    pub issued_at: i64,
    pub expires_at: i64,
    pub audit_id: [u8; 16],
    /// The audit id of the token this one was rescoped from (the chain).
    pub parent_audit_id: Option<[u8; 16]>,
    pub app_cred_id: Option<String>,
}

/// Audit ids travel as url-safe base64 without padding (22 characters), as
/// Keystone emits them.
pub fn audit_id_str(id: &[u8; 16]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

pub fn new_audit_id() -> [u8; 16] {
    rand::random()
}

impl Payload {
    /// The audit ids as Keystone lists them: this token's, then its chain's.
    pub fn audit_ids(&self) -> Vec<String> {
        let mut v = vec![audit_id_str(&self.audit_id)];
        if let Some(p) = &self.parent_audit_id {
            v.push(audit_id_str(p));
        }
        v
    }

    /// The audit id that all tokens of one chain share: the original one.
    pub fn chain_audit_id(&self) -> String {
        audit_id_str(self.parent_audit_id.as_ref().unwrap_or(&self.audit_id))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(96);
        b.push(PAYLOAD_VERSION);
        b.push(self.methods);
        put_id(&mut b, &self.user_id);
        match &self.scope {
            ScopeId::Unscoped => b.push(0),
            ScopeId::Project(id) => {
                b.push(1);
                put_id(&mut b, id);
            }
            ScopeId::Domain(id) => {
                b.push(2);
                put_id(&mut b, id);
            }
            ScopeId::System => b.push(3),
        }
        b.extend_from_slice(&self.issued_at.to_be_bytes());
        b.extend_from_slice(&self.expires_at.to_be_bytes());
        b.extend_from_slice(&self.audit_id);
        match &self.parent_audit_id {
            Some(p) => {
                b.push(1);
                b.extend_from_slice(p);
            }
            None => b.push(0),
        }
        match &self.app_cred_id {
            Some(id) => {
                b.push(1);
                put_id(&mut b, id);
            }
            None => b.push(0),
        }
        b
    }

    /// `None` for anything malformed; callers answer 401/404 without detail.
    pub fn decode(b: &[u8]) -> Option<Payload> {
        let mut r = Reader { b, pos: 0 };
        if r.u8()? != PAYLOAD_VERSION {
            return None;
        }
        let methods = r.u8()?;
        let user_id = r.id()?;
        let scope = match r.u8()? {
            0 => ScopeId::Unscoped,
            1 => ScopeId::Project(r.id()?),
            2 => ScopeId::Domain(r.id()?),
            3 => ScopeId::System,
            _ => return None,
        };
        let issued_at = i64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let expires_at = i64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let audit_id: [u8; 16] = r.take(16)?.try_into().ok()?;
        let parent_audit_id = match r.u8()? {
            0 => None,
            1 => Some(r.take(16)?.try_into().ok()?),
            _ => return None,
        };
        let app_cred_id = match r.u8()? {
            0 => None,
            1 => Some(r.id()?),
            _ => return None,
        };
        if r.pos != b.len() {
            return None;
        }
        Some(Payload {
            methods,
            user_id,
            scope,
            issued_at,
            expires_at,
            audit_id,
            parent_audit_id,
            app_cred_id,
        })
    }
}

fn put_id(b: &mut Vec<u8>, id: &str) {
    let is_hex32 = id.len() == 32 && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if is_hex32 {
        b.push(0);
        for i in 0..16 {
            // Safe: checked above that every character is a hex digit.
            b.push(u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap_or(0));
        }
    } else {
        let bytes = id.as_bytes();
        let len = bytes.len().min(255);
        b.push(1);
        b.push(len as u8);
        b.extend_from_slice(&bytes[..len]);
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn id(&mut self) -> Option<String> {
        match self.u8()? {
            0 => {
                let raw = self.take(16)?;
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut out = String::with_capacity(32);
                for x in raw {
                    out.push(HEX[(x >> 4) as usize] as char);
                    out.push(HEX[(x & 15) as usize] as char);
                }
                Some(out)
            }
            1 => {
                let len = self.u8()? as usize;
                String::from_utf8(self.take(len)?.to_vec()).ok()
            }
            _ => None,
        }
    }
}

/// The Fernet keys in use, reloaded when the repository changes on disk
/// (after `ferrostack keys rotate`), at most once per check interval.
pub struct Keys {
    repo: fernet::KeyRepository,
    state: RwLock<(fernet::KeySet, u64, std::time::Instant)>,
    /// Bumped whenever the key set is reloaded, so cached validations made
    /// with a key that may have been removed are not trusted.
    generation: std::sync::atomic::AtomicU64,
}

impl Keys {
    /// Opens the repository, creating it if empty.
    pub fn open(dir: PathBuf) -> Result<Keys, fernet::Error> {
        let repo = fernet::KeyRepository::new(dir);
        repo.setup()?;
        let set = repo.load()?;
        let fp = repo.fingerprint()?;
        Ok(Keys {
            repo,
            state: RwLock::new((set, fp, std::time::Instant::now())),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The current key set, reloading it if the repository changed.
    pub fn current(&self) -> fernet::KeySet {
        self.reload_if_due();
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Reloads the key set if the repository changed on disk, checking at
    /// most once a second so validation stays cheap.
    fn reload_if_due(&self) {
        {
            let st = self.state.read().unwrap_or_else(|e| e.into_inner());
            if st.2.elapsed() < std::time::Duration::from_secs(1) {
                return;
            }
        }
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        if st.2.elapsed() < std::time::Duration::from_secs(1) {
            return;
        }
        st.2 = std::time::Instant::now();
        if let Ok(fp) = self.repo.fingerprint() {
            if fp != st.1 {
                match self.repo.load() {
                    Ok(set) => {
                        tracing::info!(keys = set.len(), "fernet key repository reloaded");
                        st.0 = set;
                        st.1 = fp;
                        self.generation
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "fernet key repository unreadable; keeping the keys in use")
                    }
                }
            }
        }
    }

    /// Changes whenever the key set is reloaded.
    pub fn generation(&self) -> u64 {
        self.reload_if_due();
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn seal(&self, p: &Payload) -> String {
        let now = (p.issued_at / 1_000_000).max(0) as u64;
        self.current().encrypt(&p.encode(), now)
    }

    /// Decrypts and decodes a token; `None` if it is not ours or malformed.
    /// Expiry and revocation are the caller's checks.
    pub fn open_token(&self, token: &str) -> Option<Payload> {
        let (plain, _) = self.current().decrypt(token).ok()?;
        Payload::decode(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        Payload {
            methods: METHOD_PASSWORD | METHOD_TOKEN,
            user_id: "0123456789abcdef0123456789abcdef".into(),
            scope: ScopeId::Project("fedcba9876543210fedcba9876543210".into()),
            issued_at: 1_795_000_000_123_456,
            expires_at: 1_795_003_600_123_456,
            audit_id: [7; 16],
            parent_audit_id: Some([9; 16]),
            app_cred_id: Some("not-hex id".into()),
        }
    }

    #[test]
    fn round_trips_every_shape() {
        let mut p = sample();
        assert_eq!(Payload::decode(&p.encode()), Some(p.clone()));
        for scope in [
            ScopeId::Unscoped,
            ScopeId::System,
            ScopeId::Domain("default".into()),
        ] {
            p.scope = scope;
            p.parent_audit_id = None;
            p.app_cred_id = None;
            assert_eq!(Payload::decode(&p.encode()), Some(p.clone()));
        }
    }

    #[test]
    fn rejects_truncated_and_trailing_bytes() {
        let b = sample().encode();
        for n in 0..b.len() {
            assert_eq!(Payload::decode(&b[..n]), None, "prefix {n}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(Payload::decode(&longer), None);
    }

    #[test]
    fn sealed_tokens_are_short_enough_for_headers() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::open(dir.path().join("k")).unwrap();
        let t = keys.seal(&sample());
        assert!(t.len() < 255, "{}", t.len());
        assert_eq!(keys.open_token(&t), Some(sample()));
        assert_eq!(keys.open_token("garbage"), None);
    }
}
