//! Named network namespaces and running code inside them.
//!
//! Namespaces are made the way iproute2 makes them, so `ip netns` and this
//! crate see the same set: `/run/netns` is a shared bind mount of itself,
//! and each namespace is a bind mount of a thread's `ns/net` onto
//! `/run/netns/<name>`, which keeps it alive without a process.
//!
//! Entering a namespace is per thread (`setns(2)` with `CLONE_NEWNET`
//! changes only the calling thread), so code that must run "inside" gets a
//! dedicated thread that enters and then ends; no pooled thread (tokio's
//! included) ever changes namespace. Sockets are bound to the namespace
//! they were created in, whatever thread uses them later: [`handle`] and
//! [`listen_tcp`] open their socket on such a thread and hand it back to
//! the caller's runtime, which is cheaper than a runtime per namespace and
//! needs no `unsafe`.

use std::fs::{self, File};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::{names::validate_netns_name, sysctl_path, Error, Netns, Result};

/// Where named namespaces live (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

fn os(op: &'static str, object: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let object = object.into();
    move |source| Error::Os { op, object, source }
}

fn nix_os(op: &'static str, object: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let object = object.into();
    move |e| Error::Os {
        op,
        object,
        source: io::Error::from(e),
    }
}

/// The path of a named namespace.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Whether `/run/netns/<name>` is a live namespace (an nsfs mount), not
/// just a leftover file from an interrupted create.
pub fn exists(name: &str) -> bool {
    nix::sys::statfs::statfs(&path(name))
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Makes `/run/netns` exist and be a shared mount, as `ip netns add` does,
/// so namespace mounts propagate to other mount namespaces.
fn prepare_run_dir() -> Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR).map_err(os("create", NETNS_RUN_DIR))?;
    let shared = || {
        mount::<str, str, str, str>(
            None,
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        // EINVAL: not a mount point yet. Make it one, then share it.
        Err(nix::Error::EINVAL) => {
            mount::<str, str, str, str>(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(nix_os("bind mount", NETNS_RUN_DIR))?;
            shared().map_err(nix_os("make shared", NETNS_RUN_DIR))
        }
        Err(e) => Err(nix_os("make shared", NETNS_RUN_DIR)(e)),
    }
}

/// Creates the named namespace unless it exists. Blocking.
pub fn create(name: &str) -> Result<()> {
    validate_netns_name(name)?;
    if exists(name) {
        return Ok(());
    }
    prepare_run_dir()?;
    let target = path(name);
    let shown = target.display().to_string();
    // A file left by a create that died before mounting is reused.
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&target)
        .map_err(os("create", shown.clone()))?;
    let res = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(nix_os("unshare netns for", shown.clone()))?;
            mount::<str, Path, str, str>(
                Some("/proc/thread-self/ns/net"),
                &target,
                Some("none"),
                MsFlags::MS_BIND,
                None,
            )
            .map_err(nix_os("bind mount netns", shown.clone()))
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    if res.is_err() {
        let _ = fs::remove_file(&target);
    }
    res
}

/// Deletes the named namespace. Absent is fine. Blocking.
pub fn delete(name: &str) -> Result<()> {
    validate_netns_name(name)?;
    let target = path(name);
    let shown = target.display().to_string();
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(nix_os("unmount", shown)(e)),
    }
    match fs::remove_file(&target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(os("remove", shown)(e)),
        _ => Ok(()),
    }
}

/// Names of the live named namespaces, sorted.
pub fn list() -> Result<Vec<String>> {
    let rd = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(os("list", NETNS_RUN_DIR)(e)),
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| exists(n))
        .collect();
    out.sort();
    Ok(out)
}

/// Moves the calling thread into the namespace. Private: only threads
/// made for the purpose, which end afterwards, may call it.
fn enter(netns: &Netns) -> Result<()> {
    let Netns::Named(name) = netns else {
        return Ok(());
    };
    let p = path(name);
    let f = File::open(&p).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::NoSuchNetns(name.clone())
        } else {
            os("open", p.display().to_string())(e)
        }
    })?;
    if !exists(name) {
        return Err(Error::NoSuchNetns(name.clone()));
    }
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(nix_os("enter netns", name.clone()))
}

/// Runs `f` on a thread inside the namespace and returns its result,
/// blocking the caller. A panic in `f` is re-raised here. For
/// [`Netns::Current`], `f` runs on a fresh thread all the same, so the
/// behaviour does not depend on the target.
pub fn run_in<T: Send, F: FnOnce() -> T + Send>(netns: &Netns, f: F) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(netns)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Like [`run_in`], for async callers: the caller's task waits without
/// blocking its runtime's worker.
pub async fn run_in_async<T, F>(netns: &Netns, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ns = netns.clone();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| enter(&ns).map(|()| f())));
            let _ = tx.send(r);
        })
        .map_err(os("spawn thread for", netns.to_string()))?;
    match rx.await {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => unreachable!("the netns thread always sends before it ends"),
    }
}

/// Runs an async closure inside the namespace on a dedicated thread with
/// its own current-thread tokio runtime, blocking the caller. Everything
/// the future creates (sockets, child processes) belongs to that
/// namespace.
pub fn block_on_in<T, F, Fut>(netns: &Netns, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = T>,
{
    run_in(netns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(os("build runtime in", netns.to_string()))?;
        Ok(rt.block_on(f()))
    })?
}

/// Opens an rtnetlink connection inside the namespace and returns its
/// handle; the connection task runs on the caller's tokio runtime. Must be
/// called within a tokio runtime.
pub async fn handle(netns: &Netns) -> Result<rtnetlink::Handle> {
    let rt = tokio::runtime::Handle::current();
    let shown = netns.to_string();
    let (conn, handle, _) = run_in_async(netns, move || {
        // The socket is created here, inside the namespace, and registered
        // with the caller's reactor.
        let _guard = rt.enter();
        rtnetlink::new_connection()
    })
    .await?
    .map_err(os("open netlink socket in", shown))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Opens a listening TCP socket inside the namespace (see
/// [`crate::HostNet::listen_tcp`]). Blocking, but quick.
pub fn listen_tcp(netns: &Netns, addr: SocketAddr) -> Result<TcpListener> {
    run_in(netns, || TcpListener::bind(addr))?
        .map_err(os("listen on", format!("{addr} in {netns}")))
}

/// Writes a `net.*` sysctl of the namespace. `/proc/sys/net` shows the
/// namespace of the thread that opens it, hence the thread.
pub fn write_sysctl(netns: &Netns, key: &str, value: &str) -> Result<()> {
    let p = sysctl_path(key)?;
    let object = format!("sysctl {key} in {netns}");
    run_in(netns, || fs::write(&p, value))?.map_err(os("write", object))
}

/// Reads a `net.*` sysctl of the namespace, trimmed.
pub fn read_sysctl(netns: &Netns, key: &str) -> Result<String> {
    let p = sysctl_path(key)?;
    let object = format!("sysctl {key} in {netns}");
    run_in(netns, || fs::read_to_string(&p))?
        .map(|s| s.trim().to_string())
        .map_err(os("read", object))
}
