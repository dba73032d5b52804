//! ISO 9660 / UDF optical disc images.
//!
//! The first 32 KiB (16 sectors of 2048 bytes) are a system area free for
//! boot code: hybrid ISOs keep an MBR and GPT there, which is why neither
//! partition table is treated as a format of its own. From sector 16 comes
//! the volume recognition sequence: 2048-byte descriptors whose bytes 1..6
//! identify them (`CD001` for ISO 9660, `BEA01`/`NSR02`/`NSR03`/`TEA01` for
//! UDF). The ISO 9660 primary volume descriptor (type 1, ECMA-119 8.4)
//! holds, as "both-endian" fields (little-endian then big-endian copy):
//!
//! | offset | field |
//! |-------:|-------|
//! | 80  | volume space size (u32 LE, u32 BE) in logical blocks |
//! | 128 | logical block size (u16 LE, u16 BE) |
//!
//! QEMU has no ISO driver: it reads an ISO as raw. Upstream matches only
//! the identifier at 0x8001 and reads only the little-endian halves; here
//! the whole recognition sequence is scanned (so a boot record before the
//! primary descriptor is fine) and the two halves must agree, since a
//! disagreement means two readers would see two different volumes.

use std::io::{Read, Seek};

use crate::source::{be16, be32, le16, le32, Source};
use crate::{malformed, Rejection};

const VRS_START: u64 = 16 * 2048;
const DESCRIPTOR_LEN: u64 = 2048;
/// Real discs have a handful of descriptors; the bound keeps a hostile
/// image from turning the scan into many reads.
const MAX_DESCRIPTORS: u64 = 64;
/// Enough of a descriptor to read the primary volume descriptor fields.
const PREFIX_LEN: usize = 132;

const TYPE_PRIMARY: u8 = 1;

#[derive(Default)]
struct Scan {
    saw_iso9660: bool,
    saw_udf: bool,
    /// (volume space size LE, BE, logical block size LE, BE)
    primary: Option<(u32, u32, u16, u16)>,
}

fn scan<R: Read + Seek + ?Sized>(src: &mut Source<'_, R>) -> Result<Scan, Rejection> {
    let mut scan = Scan::default();
    for i in 0..MAX_DESCRIPTORS {
        let mut d = [0u8; PREFIX_LEN];
        let offset = VRS_START + i * DESCRIPTOR_LEN;
        if src.read_at(offset, &mut d)? < 7 {
            break;
        }
        match &d[1..6] {
            b"CD001" => {
                scan.saw_iso9660 = true;
                if d[0] == TYPE_PRIMARY && scan.primary.is_none() {
                    if src.len() < offset + PREFIX_LEN as u64 {
                        return Err(malformed("ISO 9660 primary volume descriptor is truncated"));
                    }
                    scan.primary = Some((le32(&d, 80), be32(&d, 84), le16(&d, 128), be16(&d, 130)));
                }
            }
            b"NSR02" | b"NSR03" => scan.saw_udf = true,
            b"BEA01" | b"TEA01" | b"BOOT2" | b"CDW02" => {}
            // The sequence ends at the first sector that is not a
            // recognised descriptor.
            _ => break,
        }
    }
    Ok(scan)
}

/// True if the volume recognition sequence holds an ISO 9660 or UDF
/// volume. Costs a single 132-byte read for content that is not an ISO.
pub(crate) fn probe<R: Read + Seek + ?Sized>(src: &mut Source<'_, R>) -> Result<bool, Rejection> {
    let s = scan(src)?;
    Ok(s.saw_iso9660 || s.saw_udf)
}

/// Returns the volume size from the primary volume descriptor, or the file
/// length for a UDF-only disc (whose size lives in structures far from the
/// start, and which QEMU exposes as raw anyway).
pub(crate) fn analyze<R: Read + Seek + ?Sized>(src: &mut Source<'_, R>) -> Result<u64, Rejection> {
    let s = scan(src)?;
    match s.primary {
        Some((blocks_le, blocks_be, block_le, block_be)) => {
            if blocks_le != blocks_be || block_le != block_be {
                return Err(malformed(
                    "ISO 9660 primary volume descriptor has inconsistent both-endian fields",
                ));
            }
            // ECMA-119: 2^(n+9) bytes and no larger than the 2048-byte
            // sector.
            if !block_le.is_power_of_two() || !(512..=2048).contains(&block_le) {
                return Err(malformed(format!(
                    "ISO 9660 logical block size {block_le} is invalid"
                )));
            }
            Ok(u64::from(blocks_le) * u64::from(block_le))
        }
        None if s.saw_iso9660 => Err(malformed("ISO 9660 image has no primary volume descriptor")),
        None => Ok(src.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn pvd(blocks: u32, block_size: u16) -> Vec<u8> {
        let mut d = vec![0u8; 2048];
        d[0] = TYPE_PRIMARY;
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        d[80..84].copy_from_slice(&blocks.to_le_bytes());
        d[84..88].copy_from_slice(&blocks.to_be_bytes());
        d[128..130].copy_from_slice(&block_size.to_le_bytes());
        d[130..132].copy_from_slice(&block_size.to_be_bytes());
        d
    }

    fn terminator() -> Vec<u8> {
        let mut d = vec![0u8; 2048];
        d[0] = 255;
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        d
    }

    fn run(descriptors: &[Vec<u8>]) -> Result<Option<u64>, Rejection> {
        let mut img = vec![0u8; VRS_START as usize];
        for d in descriptors {
            img.extend_from_slice(d);
        }
        img.resize(img.len() + 4096, 0);
        let mut c = Cursor::new(img);
        let mut src = Source::new(&mut c).unwrap();
        if !probe(&mut src)? {
            return Ok(None);
        }
        analyze(&mut src).map(Some)
    }

    #[test]
    fn pvd_after_boot_record() {
        let mut boot = vec![0u8; 2048];
        boot[1..6].copy_from_slice(b"CD001");
        assert_eq!(
            run(&[boot, pvd(100, 2048), terminator()]).unwrap(),
            Some(100 * 2048)
        );
    }

    #[test]
    fn endian_mismatch_is_malformed() {
        let mut d = pvd(100, 2048);
        d[84..88].copy_from_slice(&200u32.to_be_bytes());
        assert!(matches!(run(&[d]), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn missing_pvd_is_malformed() {
        assert!(matches!(run(&[terminator()]), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn udf_only_uses_file_length() {
        let mut bea = vec![0u8; 2048];
        bea[1..6].copy_from_slice(b"BEA01");
        let mut nsr = vec![0u8; 2048];
        nsr[1..6].copy_from_slice(b"NSR02");
        let mut tea = vec![0u8; 2048];
        tea[1..6].copy_from_slice(b"TEA01");
        let len = VRS_START + 3 * 2048 + 4096;
        assert_eq!(run(&[bea, nsr, tea]).unwrap(), Some(len));
    }

    #[test]
    fn nothing_there() {
        assert_eq!(run(&[]).unwrap(), None);
    }
}
