//! qcow2 (QEMU copy-on-write) header checks.
//!
//! Layout from QEMU's `docs/interop/qcow2.rst`; all fields are big-endian:
//!
//! | offset | field |
//! |-------:|-------|
//! | 0  | magic `QFI\xfb` |
//! | 4  | version (2 or 3; 1 is the obsolete "qcow") |
//! | 8  | backing_file_offset (0 = no backing file) |
//! | 20 | cluster_bits |
//! | 24 | size (virtual disk size in bytes) |
//! | 32 | crypt_method |
//! | 72 | v3: incompatible_features |
//! | 100 | v3: header_length |
//!
//! Header extensions follow the header (at 72 for v2, at header_length for
//! v3) inside the first cluster.
//!
//! Compared with the oslo.utils inspector this also refuses the corrupt bit,
//! accepts the extended-L2 bit (4, a plain QEMU feature upstream's bitmask
//! predates), validates cluster_bits/header_length, and walks the header
//! extensions so that an external data file *name* is refused even when the
//! feature bit is clear (or in a v2 image, where upstream skips all feature
//! checks).

use std::io::{Read, Seek};

use crate::source::{be32, be64, Source};
use crate::{malformed, Rejection};

const MAGIC: &[u8; 4] = b"QFI\xfb";

/// Incompatible feature bits (qcow2.rst) this crate understands.
const DIRTY: u64 = 1 << 0;
const CORRUPT: u64 = 1 << 1;
const EXTERNAL_DATA_FILE: u64 = 1 << 2;
const COMPRESSION_TYPE: u64 = 1 << 3;
const EXTENDED_L2: u64 = 1 << 4;
const KNOWN_INCOMPATIBLE: u64 =
    DIRTY | CORRUPT | EXTERNAL_DATA_FILE | COMPRESSION_TYPE | EXTENDED_L2;

/// Header extension type holding the external data file name.
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Header extension type that terminates the list.
const EXT_END: u32 = 0;

const V2_HEADER_LEN: usize = 72;
const V3_MIN_HEADER_LEN: usize = 104;

/// Cluster sizes QEMU can open: 512 B (9) to 2 MiB (21).
const CLUSTER_BITS: std::ops::RangeInclusive<u32> = 9..=21;

/// Bound on the header-extension walk. A 2 MiB first cluster could hold
/// 262144 empty extensions; no real image has more than a handful, and the
/// bound keeps a hostile header from costing that many reads.
const MAX_EXTENSIONS: usize = 1024;

/// True if the content starts with the qcow magic (any version: qcow v1
/// shares it, and must be detected so it can be refused rather than pass
/// as raw).
pub(crate) fn probe(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// Validates the header and returns the virtual size.
pub(crate) fn analyze<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    head: &[u8],
) -> Result<u64, Rejection> {
    // A qcow2 magic on a short file is still a qcow2 to QEMU's probe, so it
    // is rejected as malformed instead of quietly falling back to raw.
    if head.len() < 8 {
        return Err(malformed("qcow2 header is truncated"));
    }
    let version = be32(head, 4);
    if version != 2 && version != 3 {
        return Err(Rejection::UnsupportedVersion(version));
    }
    if head.len() < V2_HEADER_LEN {
        return Err(malformed("qcow2 header is truncated"));
    }

    // Any backing file, whatever its name or format: QEMU would open it
    // with the privileges of the host process.
    if be64(head, 8) != 0 {
        return Err(Rejection::BackingFile);
    }

    let cluster_bits = be32(head, 20);
    if !CLUSTER_BITS.contains(&cluster_bits) {
        return Err(malformed(format!(
            "qcow2 cluster_bits {cluster_bits} is outside the supported range 9..=21"
        )));
    }
    let cluster_size = 1u64 << cluster_bits;
    let size = be64(head, 24);

    let crypt_method = be32(head, 32);
    if crypt_method > 2 {
        return Err(malformed(format!(
            "qcow2 crypt_method {crypt_method} is unknown"
        )));
    }

    let header_len = if version == 2 {
        // Version 2 has no feature bitmaps; the header is exactly 72 bytes.
        V2_HEADER_LEN as u64
    } else {
        if head.len() < V3_MIN_HEADER_LEN {
            return Err(malformed("qcow2 header is truncated"));
        }
        let incompatible = be64(head, 72);
        // Checked first: it is the dangerous one, and the most specific
        // message for an image that also sets other bits.
        if incompatible & EXTERNAL_DATA_FILE != 0 {
            return Err(Rejection::ExternalDataFile);
        }
        let unknown = incompatible & !KNOWN_INCOMPATIBLE;
        if unknown != 0 {
            return Err(Rejection::UnknownIncompatibleFeatures(unknown));
        }
        // The spec says a corrupt image "must not be written to"; a cloud
        // has no business booting one.
        if incompatible & CORRUPT != 0 {
            return Err(Rejection::CorruptImage);
        }
        let header_len = u64::from(be32(head, 100));
        if header_len < V3_MIN_HEADER_LEN as u64 || header_len % 8 != 0 || header_len > cluster_size
        {
            return Err(malformed(format!(
                "qcow2 header_length {header_len} is invalid"
            )));
        }
        header_len
    };

    check_extensions(src, header_len, cluster_size)?;
    Ok(size)
}

/// Walks the header extensions in the first cluster, refusing an external
/// data file name. QEMU only uses that name when the feature bit is set,
/// but refusing it outright costs nothing and keeps the image from naming a
/// host file for any other consumer.
fn check_extensions<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    start: u64,
    cluster_size: u64,
) -> Result<(), Rejection> {
    let mut offset = start;
    for _ in 0..MAX_EXTENSIONS {
        if offset >= cluster_size {
            // QEMU stops at the end of the first cluster too.
            return Ok(());
        }
        if cluster_size - offset < 8 {
            return Err(malformed(
                "qcow2 header extension overruns the first cluster",
            ));
        }
        let mut ext = [0u8; 8];
        src.read_exact_at(offset, &mut ext, "qcow2 header extension area")?;
        let kind = be32(&ext, 0);
        let len = u64::from(be32(&ext, 4));
        if kind == EXT_END {
            return Ok(());
        }
        if kind == EXT_DATA_FILE {
            return Err(Rejection::ExternalDataFile);
        }
        offset += 8;
        if len > cluster_size - offset {
            return Err(malformed(
                "qcow2 header extension overruns the first cluster",
            ));
        }
        // Extension data is padded to a multiple of 8 bytes.
        offset += len.div_ceil(8) * 8;
    }
    Err(malformed("qcow2 image has too many header extensions"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A minimal, valid v3 header in a single 64 KiB cluster.
    fn v3() -> Vec<u8> {
        let mut img = vec![0u8; 65536];
        img[..4].copy_from_slice(MAGIC);
        img[4..8].copy_from_slice(&3u32.to_be_bytes());
        img[20..24].copy_from_slice(&16u32.to_be_bytes());
        img[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        img[100..104].copy_from_slice(&104u32.to_be_bytes());
        img
    }

    fn run(img: Vec<u8>) -> Result<u64, Rejection> {
        let mut c = Cursor::new(img);
        let mut src = Source::new(&mut c).unwrap();
        let mut head = vec![0u8; 2048];
        let n = src.read_at(0, &mut head).unwrap();
        head.truncate(n);
        analyze(&mut src, &head)
    }

    #[test]
    fn minimal_v3_is_accepted() {
        assert_eq!(run(v3()).unwrap(), 1 << 30);
    }

    #[test]
    fn known_harmless_bits_are_accepted() {
        let mut img = v3();
        img[79] = (DIRTY | COMPRESSION_TYPE | EXTENDED_L2) as u8;
        assert!(run(img).is_ok());
    }

    #[test]
    fn corrupt_bit_is_rejected() {
        let mut img = v3();
        img[79] = CORRUPT as u8;
        assert!(matches!(run(img), Err(Rejection::CorruptImage)));
    }

    #[test]
    fn high_unknown_bit_is_reported() {
        let mut img = v3();
        img[72] = 0x80;
        assert!(matches!(
            run(img),
            Err(Rejection::UnknownIncompatibleFeatures(
                0x8000_0000_0000_0000
            ))
        ));
    }

    #[test]
    fn data_file_extension_without_bit_is_rejected() {
        let mut img = v3();
        img[104..108].copy_from_slice(&EXT_DATA_FILE.to_be_bytes());
        img[108..112].copy_from_slice(&4u32.to_be_bytes());
        img[112..116].copy_from_slice(b"/dev");
        assert!(matches!(run(img), Err(Rejection::ExternalDataFile)));
    }

    #[test]
    fn overlong_extension_is_malformed() {
        let mut img = v3();
        img[104..108].copy_from_slice(&0x1234u32.to_be_bytes());
        img[108..112].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(run(img), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn bad_cluster_bits_and_header_length_are_malformed() {
        let mut img = v3();
        img[20..24].copy_from_slice(&40u32.to_be_bytes());
        assert!(matches!(run(img), Err(Rejection::Malformed(_))));
        let mut img = v3();
        img[100..104].copy_from_slice(&105u32.to_be_bytes());
        assert!(matches!(run(img), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn magic_only_is_malformed_not_raw() {
        assert!(matches!(run(MAGIC.to_vec()), Err(Rejection::Malformed(_))));
    }
}
