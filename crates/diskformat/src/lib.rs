//! Disk image format inspection for Ferrostack's image service and QEMU
//! compute driver.
//!
//! Disk image files are hostile input. A qcow2 image uploaded as `raw` that
//! names `/etc/passwd` as its backing file, a VMDK descriptor whose extent
//! points at a host block device, or a qcow2 with an external data file all
//! turn "boot this image" into "read this host file" the moment `qemu-img`
//! or QEMU opens them with format probing or with the wrong format
//! (OSSA-2024-001 / CVE-2024-32498 and its predecessors). This crate looks
//! at an image *before* those tools do:
//!
//! * it works out which format the content really is ([`inspect`]), refusing
//!   content that parses as more than one format, since different consumers
//!   would then disagree about what the image is;
//! * it checks that the format matches the Glance `disk_format` the user
//!   declared ([`verify`], [`verify_path`]);
//! * it applies per-format safety checks (backing files, external data
//!   files, unknown qcow2 features, VMDK extents naming other files, ...);
//! * it reports the virtual size so callers can compare it with flavors and
//!   quotas.
//!
//! Only headers and small metadata tables are read, through any
//! [`Read`] + [`Seek`] source, whatever the image size: no metadata
//! structure larger than [`MAX_METADATA_BYTES`] is buffered, guest data is
//! never scanned, and nothing is shelled out to.
//!
//! The checks follow the format inspector that OpenStack Glance and Nova use
//! (`oslo_utils.imageutils.format_inspector`), written independently from
//! the QEMU, VMware, Microsoft and ECMA-119 format specifications, and
//! tightened where QEMU's own parsing showed a gap (each format module's
//! source documents its layout and every deviation from upstream).
//!
//! The inspection is only meaningful if the bytes QEMU later opens are the
//! bytes inspected here: callers must inspect a file that can no longer
//! change (or the very file descriptor they hand on), and must always pass
//! the verified format explicitly to QEMU instead of letting it probe.

#![warn(missing_docs)]

mod iso;
mod qcow2;
mod source;
mod vhd;
mod vhdx;
mod vmdk;

use std::fmt;
use std::io::{Read, Seek};
use std::path::Path;

use source::Source;

/// Largest single metadata structure (VMDK descriptor, VHDX table, ...) the
/// inspector will buffer. Anything that needs more is rejected with
/// [`Rejection::TooLarge`] rather than read, so a hostile image cannot make
/// the inspector allocate or read without bound.
pub const MAX_METADATA_BYTES: u64 = 1 << 20;

/// How much of the start of the file is read up front. 2 KiB covers every
/// fixed header looked at here and matches the buffer QEMU uses when it
/// probes formats, which matters for the VMDK text-descriptor probe.
const HEAD_LEN: usize = 2048;

/// Longest image-supplied string (file names, create types) echoed back in
/// a [`Rejection`]; the message is shown to API users and must stay small.
const MAX_ECHO_CHARS: usize = 128;

/// A disk image format this crate can recognise and accept.
///
/// The names follow Glance's `disk_format` values; QEMU calls [`Vhd`]
/// "vpc".
///
/// [`Vhd`]: DiskFormat::Vhd
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskFormat {
    /// Anything that matches no other format: the bytes are the disk.
    Raw,
    /// QEMU copy-on-write image, version 2 or 3.
    Qcow2,
    /// VMware disk (only single-file sparse variants are accepted).
    Vmdk,
    /// Microsoft Virtual PC / Hyper-V VHD (QEMU: "vpc"), fixed or dynamic.
    Vhd,
    /// Microsoft Hyper-V VHDX.
    Vhdx,
    /// ISO 9660 (or UDF) optical disc image.
    Iso,
}

impl DiskFormat {
    /// The Glance `disk_format` name of this format.
    pub fn as_str(&self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Iso => "iso",
        }
    }

    /// Maps a Glance `disk_format` value to the format it denotes.
    ///
    /// `vpc` (QEMU's name, also a valid Glance value) maps to
    /// [`DiskFormat::Vhd`]. Matching is exact and case-sensitive, as
    /// Glance's own enum is. Formats this crate cannot inspect (`ami`,
    /// `ari`, `aki`, `vdi`, `ploop`) and unknown names return `None`; see
    /// [`verify`] for how those are handled.
    pub fn from_glance(s: &str) -> Option<DiskFormat> {
        Some(match s {
            "raw" => DiskFormat::Raw,
            "qcow2" => DiskFormat::Qcow2,
            "vmdk" => DiskFormat::Vmdk,
            "vhd" | "vpc" => DiskFormat::Vhd,
            "vhdx" => DiskFormat::Vhdx,
            "iso" => DiskFormat::Iso,
            _ => return None,
        })
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a successful inspection: the image is of `format` and
/// passed that format's safety checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The format the content was detected as.
    pub format: DiskFormat,
    /// Size in bytes of the disk the guest will see. For raw images this is
    /// the file size; for ISO 9660 it is the volume size from the primary
    /// volume descriptor. The value comes straight from the image header,
    /// so callers must still compare it against flavor and quota limits.
    pub virtual_size: u64,
    /// Size in bytes of the image file (stream length) itself.
    pub actual_size: u64,
}

/// Why an image was refused. The `Display` text is meant for API users: it
/// names the problem, and only ever echoes strings taken from the image
/// itself (never host paths), escaped and truncated.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The image could not be read.
    #[error("could not read the image: {0}")]
    Io(#[from] std::io::Error),

    /// The content is not in the declared `disk_format`. This is the
    /// classic attack: a qcow2 (with a backing file) uploaded as `raw`.
    #[error("image content is {detected} but its disk_format is declared as {declared}")]
    FormatMismatch {
        /// The `disk_format` the caller declared.
        declared: String,
        /// The format the content was detected as.
        detected: DiskFormat,
    },

    /// The declared `disk_format` is not one Glance knows about.
    #[error("disk_format {0:?} is not supported")]
    UnsupportedDeclaredFormat(String),

    /// The image refers to a backing (parent) file: qcow2
    /// `backing_file_offset`, VMDK `parentFileNameHint`, differencing VHD or
    /// VHDX. Opening it would make QEMU open a file the image names.
    #[error("image references a backing file, which is not allowed")]
    BackingFile,

    /// The qcow2 image keeps its guest data in an external data file, which
    /// QEMU would open by the name the image supplies.
    #[error("qcow2 image uses an external data file, which is not allowed")]
    ExternalDataFile,

    /// qcow2 header version other than 2 or 3 (version 1 is the obsolete
    /// "qcow" format).
    #[error("qcow2 version {0} is not supported (only versions 2 and 3 are accepted)")]
    UnsupportedVersion(u32),

    /// qcow2 incompatible feature bits this crate does not know; their
    /// meaning (and safety) cannot be judged. The value holds the unknown
    /// bits only.
    #[error("qcow2 image uses unknown incompatible features (bits {0:#x})")]
    UnknownIncompatibleFeatures(u64),

    /// qcow2 image has its "corrupt" incompatible feature bit set.
    #[error("qcow2 image is marked corrupt")]
    CorruptImage,

    /// A VMDK extent line references a file other than the image itself.
    /// The value is the file name as written in the descriptor.
    #[error("VMDK extent references another file: {0:?}")]
    VmdkExternalExtent(String),

    /// A VMDK create type other than `monolithicSparse` or
    /// `streamOptimized`; the others keep data in separate files.
    #[error(
        "VMDK create type {0:?} is not allowed (only monolithicSparse and streamOptimized are)"
    )]
    VmdkUnsafeCreateType(String),

    /// A VHDX image whose header points at a log. QEMU replays the log when
    /// it opens the image read-write, which could rewrite the metadata that
    /// was inspected here.
    #[error("VHDX image has a pending log, which is not allowed")]
    VhdxPendingLog,

    /// The content parses as more than one format (e.g. a qcow2 header plus
    /// an ISO 9660 volume descriptor). Different consumers would disagree
    /// about what the image is, so it is refused.
    #[error("image content matches several formats ({}) and is refused as ambiguous", format_list(.0))]
    AmbiguousFormat(Vec<DiskFormat>),

    /// The content is a format QEMU understands but Ferrostack never
    /// accepts (QED, legacy VMware COWD), so it may not pass as raw either.
    #[error("image content is in the {0} format, which is not accepted")]
    BannedFormat(&'static str),

    /// The image claims a format but its metadata is invalid or truncated.
    #[error("malformed image: {0}")]
    Malformed(String),

    /// A metadata structure is larger than the inspector is willing to read
    /// ([`MAX_METADATA_BYTES`]).
    #[error("{what} is larger than the {limit}-byte inspection limit")]
    TooLarge {
        /// Which structure was too large.
        what: &'static str,
        /// The limit in bytes.
        limit: u64,
    },
}

fn format_list(formats: &[DiskFormat]) -> String {
    formats
        .iter()
        .map(DiskFormat::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Makes an image-supplied string safe to put into a [`Rejection`]: at most
/// [`MAX_ECHO_CHARS`] characters (the variants print it with `{:?}`, which
/// escapes control characters).
pub(crate) fn echo(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_ECHO_CHARS).collect();
    if s.chars().nth(MAX_ECHO_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Shorthand for building [`Rejection::Malformed`].
pub(crate) fn malformed(msg: impl Into<String>) -> Rejection {
    Rejection::Malformed(msg.into())
}

/// A format whose signature was found, with what its probe already learnt.
enum Candidate {
    Qcow2,
    Vmdk(vmdk::Probe),
    Vhd(vhd::Probe),
    Vhdx,
    Iso,
}

impl Candidate {
    fn format(&self) -> DiskFormat {
        match self {
            Candidate::Qcow2 => DiskFormat::Qcow2,
            Candidate::Vmdk(_) => DiskFormat::Vmdk,
            Candidate::Vhd(_) => DiskFormat::Vhd,
            Candidate::Vhdx => DiskFormat::Vhdx,
            Candidate::Iso => DiskFormat::Iso,
        }
    }
}

/// Runs every format's signature probe and settles on one format.
///
/// All probes run, rather than stopping at the first hit, because an image
/// that carries two formats' signatures is itself the attack we must catch.
fn detect<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    head: &[u8],
) -> Result<Option<Candidate>, Rejection> {
    // QED has backing files and QEMU probes it, so it must not slip
    // through as "raw". Nothing can legitimately share its magic.
    if head.starts_with(b"QED\0") {
        return Err(Rejection::BannedFormat("qed"));
    }

    let mut found = Vec::new();
    if qcow2::probe(head) {
        found.push(Candidate::Qcow2);
    }
    if let Some(p) = vmdk::probe(src, head)? {
        found.push(Candidate::Vmdk(p));
    }
    if let Some(p) = vhd::probe(src, head)? {
        found.push(Candidate::Vhd(p));
    }
    if vhdx::probe(head) {
        found.push(Candidate::Vhdx);
    }
    if iso::probe(src)? {
        found.push(Candidate::Iso);
    }

    // Raw disks routinely carry an MBR or GPT and ISO hybrids carry both
    // an MBR and a volume descriptor; neither partition table is detected
    // as a format of its own, so those stay "raw" and "iso" respectively.
    if found.len() > 1 {
        return Err(Rejection::AmbiguousFormat(
            found.iter().map(Candidate::format).collect(),
        ));
    }
    Ok(found.pop())
}

/// Parses the detected format's metadata, runs its safety checks and
/// returns the virtual size.
fn analyze<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    head: &[u8],
    candidate: Option<Candidate>,
) -> Result<u64, Rejection> {
    match candidate {
        None => Ok(src.len()),
        Some(Candidate::Qcow2) => qcow2::analyze(src, head),
        Some(Candidate::Vmdk(p)) => vmdk::analyze(src, head, p),
        Some(Candidate::Vhd(p)) => vhd::analyze(src, p),
        Some(Candidate::Vhdx) => vhdx::analyze(src),
        Some(Candidate::Iso) => iso::analyze(src),
    }
}

fn read_head<R: Read + Seek + ?Sized>(src: &mut Source<'_, R>) -> Result<Vec<u8>, Rejection> {
    let mut head = vec![0u8; HEAD_LEN];
    let n = src.read_at(0, &mut head)?;
    head.truncate(n);
    Ok(head)
}

/// Detects the format of an image and runs that format's safety checks.
///
/// Reads only headers and bounded metadata from `r` (seeking as needed);
/// the stream position afterwards is unspecified. Returns the detected
/// format and sizes, or the reason the image must not be handed to QEMU.
pub fn inspect<R: Read + Seek + ?Sized>(r: &mut R) -> Result<Inspection, Rejection> {
    let mut src = Source::new(r)?;
    let head = read_head(&mut src)?;
    let candidate = detect(&mut src, &head)?;
    let format = candidate
        .as_ref()
        .map_or(DiskFormat::Raw, Candidate::format);
    let virtual_size = analyze(&mut src, &head, candidate)?;
    Ok(Inspection {
        format,
        virtual_size,
        actual_size: src.len(),
    })
}

/// What a declared Glance `disk_format` requires of the content.
enum Expectation {
    /// The content must be exactly this format.
    Exactly(DiskFormat),
    /// A format this crate cannot parse (AMI kernels and ramdisks, VDI,
    /// ploop): the content must at least not be one of the formats QEMU
    /// would interpret (it must look raw).
    Opaque,
}

fn expectation(declared: &str) -> Result<Expectation, Rejection> {
    if let Some(format) = DiskFormat::from_glance(declared) {
        return Ok(Expectation::Exactly(format));
    }
    match declared {
        "ami" | "ari" | "aki" | "vdi" | "ploop" => Ok(Expectation::Opaque),
        other => Err(Rejection::UnsupportedDeclaredFormat(echo(other))),
    }
}

/// Checks that an image really is the declared Glance `disk_format` and
/// passes the safety checks for its format.
///
/// `declared` is a Glance `disk_format` value (`raw`, `qcow2`, `vmdk`,
/// `vhd`/`vpc`, `vhdx`, `iso`). For formats the inspector cannot read
/// (`ami`, `ari`, `aki`, `vdi`, `ploop`) the content must be detected as
/// raw, so that e.g. a qcow2 declared as `ami` is still refused. Any other
/// value is rejected with [`Rejection::UnsupportedDeclaredFormat`].
///
/// A format mismatch is reported before the detected format's own safety
/// checks run, since it is the more fundamental problem.
pub fn verify<R: Read + Seek + ?Sized>(declared: &str, r: &mut R) -> Result<Inspection, Rejection> {
    let expected = expectation(declared)?;
    let mut src = Source::new(r)?;
    let head = read_head(&mut src)?;
    let candidate = detect(&mut src, &head)?;
    let format = candidate
        .as_ref()
        .map_or(DiskFormat::Raw, Candidate::format);
    let matches = match expected {
        Expectation::Exactly(want) => want == format,
        Expectation::Opaque => format == DiskFormat::Raw,
    };
    if !matches {
        return Err(Rejection::FormatMismatch {
            declared: declared.to_owned(),
            detected: format,
        });
    }
    let virtual_size = analyze(&mut src, &head, candidate)?;
    Ok(Inspection {
        format,
        virtual_size,
        actual_size: src.len(),
    })
}

/// [`verify`] for a file on disk.
///
/// I/O errors are reported without the path, since rejection messages go
/// to API users.
pub fn verify_path(declared: &str, path: &Path) -> Result<Inspection, Rejection> {
    // Unbuffered on purpose: the inspector seeks between small reads, which
    // would only defeat a read-ahead buffer.
    let mut file = std::fs::File::open(path)?;
    verify(declared, &mut file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn glance_names_round_trip() {
        for f in [
            DiskFormat::Raw,
            DiskFormat::Qcow2,
            DiskFormat::Vmdk,
            DiskFormat::Vhd,
            DiskFormat::Vhdx,
            DiskFormat::Iso,
        ] {
            assert_eq!(DiskFormat::from_glance(f.as_str()), Some(f));
        }
        assert_eq!(DiskFormat::from_glance("vpc"), Some(DiskFormat::Vhd));
        assert_eq!(DiskFormat::from_glance("ami"), None);
        assert_eq!(DiskFormat::from_glance("QCOW2"), None);
    }

    #[test]
    fn empty_stream_is_raw() {
        let got = inspect(&mut Cursor::new(Vec::new())).unwrap();
        assert_eq!(got.format, DiskFormat::Raw);
        assert_eq!(got.virtual_size, 0);
    }

    #[test]
    fn opaque_declared_formats_need_raw_content() {
        let mut raw = Cursor::new(vec![0u8; 4096]);
        assert_eq!(verify("aki", &mut raw).unwrap().format, DiskFormat::Raw);
        let mut qcow = vec![0u8; 4096];
        qcow[..4].copy_from_slice(b"QFI\xfb");
        let err = verify("ami", &mut Cursor::new(qcow)).unwrap_err();
        assert!(matches!(
            err,
            Rejection::FormatMismatch {
                detected: DiskFormat::Qcow2,
                ..
            }
        ));
    }

    #[test]
    fn unknown_declared_format_is_rejected() {
        let err = verify("floppy", &mut Cursor::new(vec![0u8; 16])).unwrap_err();
        assert!(matches!(err, Rejection::UnsupportedDeclaredFormat(_)));
    }

    #[test]
    fn qed_is_banned() {
        let mut img = vec![0u8; 4096];
        img[..4].copy_from_slice(b"QED\0");
        let err = inspect(&mut Cursor::new(img)).unwrap_err();
        assert!(matches!(err, Rejection::BannedFormat("qed")));
    }

    #[test]
    fn echo_truncates() {
        let long = "x".repeat(1000);
        assert_eq!(echo(&long).chars().count(), MAX_ECHO_CHARS + 1);
        assert_eq!(echo("short"), "short");
    }
}
