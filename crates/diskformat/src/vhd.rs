//! VHD (QEMU: "vpc") checks.
//!
//! Every VHD ends with a 512-byte big-endian footer; dynamic and
//! differencing disks also keep a copy of it at offset 0 and point from it
//! to a "cxsparse" dynamic disk header. Footer fields used here
//! (Microsoft "Virtual Hard Disk Image Format Specification"):
//!
//! | offset | field |
//! |-------:|-------|
//! | 0  | cookie `conectix` |
//! | 16 | data offset (dynamic header; all ones for fixed disks) |
//! | 48 | current size (bytes) |
//! | 56 | disk geometry (cylinders u16, heads u8, sectors per track u8) |
//! | 60 | disk type (2 fixed, 3 dynamic, 4 differencing) |
//!
//! Upstream only looks for the cookie at offset 0, so fixed VHDs pass as
//! raw there. Here the footer at the end counts too: a fixed VHD is reported
//! as vhd, and a footer hidden at the end of another format makes the image
//! ambiguous. Differencing disks, which name a parent file, are refused.

use std::io::{Read, Seek};

use crate::source::{be16, be32, be64, Source};
use crate::{malformed, Rejection};

const COOKIE: &[u8; 8] = b"conectix";
const DYNAMIC_COOKIE: &[u8; 8] = b"cxsparse";
const FOOTER_LEN: usize = 512;

const TYPE_FIXED: u32 = 2;
const TYPE_DYNAMIC: u32 = 3;
const TYPE_DIFFERENCING: u32 = 4;

/// Footer copies found by the probe, as raw bytes (the start copy may be
/// short if the file is truncated).
pub(crate) struct Probe {
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
}

/// Looks for the footer cookie at the start and in the last sector.
pub(crate) fn probe<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    head: &[u8],
) -> Result<Option<Probe>, Rejection> {
    let start = head
        .starts_with(COOKIE)
        .then(|| head[..head.len().min(FOOTER_LEN)].to_vec());
    let len = src.len();
    let end = if len > FOOTER_LEN as u64 {
        let mut tail = vec![0u8; FOOTER_LEN];
        src.read_exact_at(len - FOOTER_LEN as u64, &mut tail, "VHD footer")?;
        tail.starts_with(COOKIE).then_some(tail)
    } else {
        None
    };
    if start.is_none() && end.is_none() {
        return Ok(None);
    }
    Ok(Some(Probe { start, end }))
}

/// The footer fields this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footer {
    data_offset: u64,
    current_size: u64,
    /// cylinders * heads * sectors per track * 512.
    geometry_size: u64,
    disk_type: u32,
}

impl Footer {
    fn parse(b: &[u8]) -> Result<Footer, Rejection> {
        if b.len() < FOOTER_LEN {
            return Err(malformed("VHD footer is truncated"));
        }
        Ok(Footer {
            data_offset: be64(b, 16),
            current_size: be64(b, 48),
            geometry_size: u64::from(be16(b, 56)) * u64::from(b[58]) * u64::from(b[59]) * 512,
            disk_type: be32(b, 60),
        })
    }
}

/// CHS geometry 65535/16/255: the value tools write when the size does not
/// fit a geometry, meaning "use the current size field".
const MAX_GEOMETRY_SIZE: u64 = 65535 * 16 * 255 * 512;

/// The footer checksum: one's complement of the byte sum, with the
/// checksum field itself (offset 64) counted as zero.
fn checksum(footer: &[u8]) -> u32 {
    let sum = footer[..FOOTER_LEN]
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

/// Checks the footer(s) and returns the virtual size.
///
/// QEMU trusts the copy at the start when there is one (and then treats
/// the disk as dynamic), otherwise the footer at the end (as fixed); the
/// same footer is used here, and its checksum must be right, as QEMU
/// requires.
///
/// The size is the footer's "current size", unless the CHS geometry
/// describes a larger disk. QEMU picks one or the other depending on the
/// creator application recorded in the footer, which the image controls,
/// so the larger of the two is the only value safe to hold against flavor
/// limits; the maximum geometry is the conventional "see current size"
/// marker and is ignored. For images made by qemu-img both agree.
pub(crate) fn analyze<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    probe: Probe,
) -> Result<u64, Rejection> {
    let at_start = probe.start.is_some();
    let used = match probe.start.as_deref().or(probe.end.as_deref()) {
        Some(bytes) => bytes,
        None => return Err(malformed("VHD footer is missing")),
    };
    let footer = Footer::parse(used)?;
    if checksum(used) != be32(used, 64) {
        return Err(malformed("VHD footer checksum is incorrect"));
    }
    if let Some(end) = probe.end.as_deref().filter(|_| at_start) {
        let end = Footer::parse(end)?;
        if end.disk_type != footer.disk_type || end.current_size != footer.current_size {
            return Err(malformed(
                "VHD footer and its copy at the start of the file disagree",
            ));
        }
    }

    match (footer.disk_type, at_start) {
        // A differencing disk's data is relative to a parent VHD that the
        // dynamic header locates by file name.
        (TYPE_DIFFERENCING, _) => return Err(Rejection::BackingFile),
        (TYPE_FIXED, false) => {}
        (TYPE_FIXED, true) => {
            return Err(malformed(
                "fixed VHD has a footer copy at the start, which QEMU would read as a dynamic disk",
            ))
        }
        (TYPE_DYNAMIC, true) => {
            let mut cookie = [0u8; 8];
            src.read_exact_at(footer.data_offset, &mut cookie, "VHD dynamic disk header")?;
            if &cookie != DYNAMIC_COOKIE {
                return Err(malformed("VHD dynamic disk header signature is missing"));
            }
        }
        (TYPE_DYNAMIC, false) => {
            return Err(malformed(
                "dynamic VHD is missing the footer copy at the start of the file",
            ))
        }
        (other, _) => return Err(malformed(format!("VHD disk type {other} is not valid"))),
    }

    if footer.geometry_size == MAX_GEOMETRY_SIZE {
        Ok(footer.current_size)
    } else {
        Ok(footer.current_size.max(footer.geometry_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn footer(disk_type: u32, size: u64, data_offset: u64) -> Vec<u8> {
        let mut f = vec![0u8; FOOTER_LEN];
        f[..8].copy_from_slice(COOKIE);
        f[16..24].copy_from_slice(&data_offset.to_be_bytes());
        f[40..48].copy_from_slice(&size.to_be_bytes());
        f[48..56].copy_from_slice(&size.to_be_bytes());
        f[60..64].copy_from_slice(&disk_type.to_be_bytes());
        seal(&mut f);
        f
    }

    fn seal(f: &mut [u8]) {
        let c = checksum(f);
        f[64..68].copy_from_slice(&c.to_be_bytes());
    }

    fn run(img: Vec<u8>) -> Result<u64, Rejection> {
        let mut c = Cursor::new(img);
        let mut src = Source::new(&mut c).unwrap();
        let mut head = vec![0u8; 2048];
        let n = src.read_at(0, &mut head).unwrap();
        head.truncate(n);
        let p = probe(&mut src, &head)?.expect("probe should match");
        analyze(&mut src, p)
    }

    #[test]
    fn fixed_footer_at_end() {
        let mut img = vec![0u8; 4096];
        img.extend(footer(TYPE_FIXED, 4096, u64::MAX));
        assert_eq!(run(img).unwrap(), 4096);
    }

    #[test]
    fn larger_geometry_wins() {
        let mut f = footer(TYPE_FIXED, 4096, u64::MAX);
        // 16 cylinders * 4 heads * 17 sectors = 1088 sectors.
        f[56..58].copy_from_slice(&16u16.to_be_bytes());
        f[58] = 4;
        f[59] = 17;
        seal(&mut f);
        let mut img = vec![0u8; 4096];
        img.extend(f);
        assert_eq!(run(img).unwrap(), 1088 * 512);
    }

    #[test]
    fn bad_checksum_is_malformed() {
        let mut img = vec![0u8; 4096];
        let mut f = footer(TYPE_FIXED, 4096, u64::MAX);
        f[100] ^= 1;
        img.extend(f);
        assert!(matches!(run(img), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn fixed_with_start_copy_is_malformed() {
        let mut img = footer(TYPE_FIXED, 4096, u64::MAX);
        img.resize(4096, 0);
        img.extend(footer(TYPE_FIXED, 4096, u64::MAX));
        assert!(matches!(run(img), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn differencing_is_backing_file() {
        let mut img = footer(TYPE_DIFFERENCING, 1 << 20, 512);
        img.extend_from_slice(DYNAMIC_COOKIE);
        img.resize(2048, 0);
        img.extend(footer(TYPE_DIFFERENCING, 1 << 20, 512));
        assert!(matches!(run(img), Err(Rejection::BackingFile)));
    }

    #[test]
    fn disagreeing_copies_are_malformed() {
        let mut img = footer(TYPE_DYNAMIC, 1 << 20, 512);
        img.extend_from_slice(DYNAMIC_COOKIE);
        img.resize(2048, 0);
        img.extend(footer(TYPE_DYNAMIC, 1 << 40, 512));
        assert!(matches!(run(img), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn dynamic_without_header_is_malformed() {
        let mut img = footer(TYPE_DYNAMIC, 1 << 20, 512);
        img.resize(2048, 0);
        img.extend(footer(TYPE_DYNAMIC, 1 << 20, 512));
        assert!(matches!(run(img), Err(Rejection::Malformed(_))));
    }
}
