//! The crate's error type. Messages name the object and the namespace;
//! the underlying OS or netlink error is the `source`, never repeated in
//! the message.

use crate::Netns;

/// Errors of the host network drivers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An interface, namespace or resource-derived name is not usable.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The offending name or id.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A value (MAC, prefix, sysctl key) does not parse.
    #[error("invalid value {value:?}: expected {expected}")]
    InvalidValue {
        /// The offending value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The named namespace does not exist.
    #[error("network namespace {0} does not exist")]
    NoSuchNetns(String),
    /// The link does not exist in that namespace.
    #[error("link {link} does not exist in {netns}")]
    NoSuchLink {
        /// Namespace searched.
        netns: Netns,
        /// Link name.
        link: String,
    },
    /// An object of that name exists with settings that cannot be changed
    /// in place (another kind, VNI, peer …).
    #[error("{object} in {netns} exists with other settings: {detail}")]
    Conflict {
        /// Namespace.
        netns: Netns,
        /// The object, e.g. `link fsx-100`.
        object: String,
        /// What differs.
        detail: String,
    },
    /// The kernel refused a netlink request.
    #[error("netlink: {op} {object} in {netns} failed")]
    Netlink {
        /// The operation, e.g. `create bridge`.
        op: &'static str,
        /// The object, e.g. `link fsb-3f1c2a4b5d6`.
        object: String,
        /// Namespace.
        netns: Netns,
        /// The kernel's answer (boxed: it is large, and errors should be
        /// cheap to pass around).
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// A system call or file operation failed.
    #[error("{op} {object} failed")]
    Os {
        /// The operation, e.g. `mount`.
        op: &'static str,
        /// The object, e.g. `/run/netns/fsr-…`.
        object: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The errno behind a netlink or OS error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { source, .. } => match source.as_ref() {
                rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
                _ => None,
            },
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
