//! VHDX checks.
//!
//! Layout (Microsoft [MS-VHDX]), all little-endian:
//!
//! * 0: file type identifier, `vhdxfile`;
//! * 64 KiB and 128 KiB: the two headers (`head`), whose log GUID at
//!   offset 48 is zero unless a log must be replayed;
//! * 192 KiB: region table (`regi`, entry count at 8, 32-byte entries from
//!   16: GUID, file offset u64, length u32, flags u32);
//! * metadata region: table (`metadata`, entry count u16 at 10, 32-byte
//!   entries from 32: item GUID, offset u32 relative to the region, length
//!   u32, flags u32) pointing at items such as Virtual Disk Size (u64) and
//!   File Parameters (block size u32, flags u32 with bit 1 = has parent).
//!
//! Beyond upstream (which only extracts the size), this refuses
//! differencing images (has-parent flag or a parent locator item) and
//! images with a pending log: QEMU replays the log when opening read-write,
//! which could rewrite the very metadata inspected here.

use std::io::{Read, Seek};

use crate::source::{le16, le32, le64, Source};
use crate::{malformed, Rejection};

const SIGNATURE: &[u8; 8] = b"vhdxfile";
const HEADER_OFFSETS: [u64; 2] = [64 * 1024, 128 * 1024];
const REGION_TABLE_OFFSET: u64 = 192 * 1024;
/// The spec caps both tables at 2047 entries (each fits in 64 KiB).
const MAX_ENTRIES: u64 = 2047;
const ENTRY_LEN: u64 = 32;

/// Builds the on-disk byte order of a GUID written as
/// `d1-d2-d3-d4`: the first three fields little-endian, the rest as is.
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// 8B7CA206-4790-4B9A-B8FE-575F050F886E
const METADATA_REGION: [u8; 16] = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
/// 2FA54224-CD1B-4876-B211-5DBED83BF4B8
const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
/// CAA16737-FA36-4D43-B3B6-33F0AA44E76B
const FILE_PARAMETERS: [u8; 16] = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
/// A8D35F2D-B30B-454D-ABF7-D3D84834AB0C
const PARENT_LOCATOR: [u8; 16] = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);
const HAS_PARENT: u32 = 1 << 1;

/// True if the file type identifier is present.
pub(crate) fn probe(head: &[u8]) -> bool {
    head.starts_with(SIGNATURE)
}

/// Checks headers, region table and metadata; returns the virtual size.
pub(crate) fn analyze<R: Read + Seek + ?Sized>(src: &mut Source<'_, R>) -> Result<u64, Rejection> {
    check_headers(src)?;
    let (meta_offset, meta_len) = find_metadata_region(src)?;
    let items = read_metadata_table(src, meta_offset)?;

    let find = |id: &[u8; 16]| items.iter().find(|item| &item.id == id);
    if find(&PARENT_LOCATOR).is_some() {
        return Err(Rejection::BackingFile);
    }
    if let Some(params) = find(&FILE_PARAMETERS) {
        let b = read_item(
            src,
            meta_offset,
            meta_len,
            params,
            8,
            "VHDX file parameters",
        )?;
        if le32(&b, 4) & HAS_PARENT != 0 {
            return Err(Rejection::BackingFile);
        }
    }
    let vds = find(&VIRTUAL_DISK_SIZE)
        .ok_or_else(|| malformed("VHDX metadata has no virtual disk size"))?;
    let b = read_item(src, meta_offset, meta_len, vds, 8, "VHDX virtual disk size")?;
    Ok(le64(&b, 0))
}

/// Both headers are checked (rather than picking the current one by
/// sequence number and checksum as QEMU does) so that neither can carry a
/// log, whichever one QEMU ends up trusting.
fn check_headers<R: Read + Seek + ?Sized>(src: &mut Source<'_, R>) -> Result<(), Rejection> {
    let mut valid = 0;
    for offset in HEADER_OFFSETS {
        let mut h = [0u8; 64];
        if src.read_at(offset, &mut h)? < h.len() || &h[..4] != b"head" {
            continue;
        }
        valid += 1;
        if h[48..64].iter().any(|&b| b != 0) {
            return Err(Rejection::VhdxPendingLog);
        }
    }
    if valid == 0 {
        return Err(malformed("VHDX image has no valid header"));
    }
    Ok(())
}

/// Returns (offset, length) of the metadata region from the region table.
fn find_metadata_region<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
) -> Result<(u64, u64), Rejection> {
    let mut hdr = [0u8; 16];
    src.read_exact_at(REGION_TABLE_OFFSET, &mut hdr, "VHDX region table")?;
    if &hdr[..4] != b"regi" {
        return Err(malformed("VHDX region table signature is missing"));
    }
    let count = u64::from(le32(&hdr, 8));
    if count > MAX_ENTRIES {
        return Err(malformed("VHDX region table has too many entries"));
    }
    let mut entries = vec![0u8; (count * ENTRY_LEN) as usize];
    src.read_exact_at(REGION_TABLE_OFFSET + 16, &mut entries, "VHDX region table")?;
    let mut found = None;
    for e in entries.chunks_exact(ENTRY_LEN as usize) {
        if e[..16] == METADATA_REGION {
            if found.is_some() {
                // QEMU refuses duplicates too; two candidates would let two
                // readers pick different metadata.
                return Err(malformed(
                    "VHDX region table lists the metadata region twice",
                ));
            }
            found = Some((le64(e, 16), u64::from(le32(e, 24))));
        }
    }
    let (offset, len) = found.ok_or_else(|| malformed("VHDX metadata region is missing"))?;
    // The spec requires 1 MiB alignment; at the very least the region must
    // not overlap the fixed header area.
    if offset < 1 << 20 || len < 64 * 1024 {
        return Err(malformed("VHDX metadata region is misplaced"));
    }
    Ok((offset, len))
}

struct MetadataItem {
    id: [u8; 16],
    offset: u32,
    length: u32,
}

fn read_metadata_table<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    meta_offset: u64,
) -> Result<Vec<MetadataItem>, Rejection> {
    let mut hdr = [0u8; 32];
    src.read_exact_at(meta_offset, &mut hdr, "VHDX metadata table")?;
    if &hdr[..8] != b"metadata" {
        return Err(malformed("VHDX metadata table signature is missing"));
    }
    let count = u64::from(le16(&hdr, 10));
    if count > MAX_ENTRIES {
        return Err(malformed("VHDX metadata table has too many entries"));
    }
    let mut entries = vec![0u8; (count * ENTRY_LEN) as usize];
    src.read_exact_at(
        meta_offset.saturating_add(32),
        &mut entries,
        "VHDX metadata table",
    )?;
    let mut items: Vec<MetadataItem> = Vec::with_capacity(entries.len() / ENTRY_LEN as usize);
    for e in entries.chunks_exact(ENTRY_LEN as usize) {
        let mut id = [0u8; 16];
        id.copy_from_slice(&e[..16]);
        if items.iter().any(|i| i.id == id) {
            return Err(malformed("VHDX metadata table lists an item twice"));
        }
        items.push(MetadataItem {
            id,
            offset: le32(e, 16),
            length: le32(e, 20),
        });
    }
    Ok(items)
}

/// Reads the first `want` bytes of a metadata item, which must lie inside
/// the metadata region.
fn read_item<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    meta_offset: u64,
    meta_len: u64,
    item: &MetadataItem,
    want: usize,
    what: &str,
) -> Result<Vec<u8>, Rejection> {
    let start = u64::from(item.offset);
    if u64::from(item.length) < want as u64 || start + want as u64 > meta_len {
        return Err(malformed(format!("{what} item is out of bounds")));
    }
    let mut b = vec![0u8; want];
    src.read_exact_at(meta_offset.saturating_add(start), &mut b, what)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const META: usize = 1 << 20;

    /// Builds a minimal VHDX: identifier, one header, region table with the
    /// metadata region at 1 MiB, and the given metadata items.
    fn image(items: &[([u8; 16], Vec<u8>)]) -> Vec<u8> {
        let mut img = vec![0u8; META + 128 * 1024];
        img[..8].copy_from_slice(SIGNATURE);
        img[64 * 1024..64 * 1024 + 4].copy_from_slice(b"head");
        let rt = REGION_TABLE_OFFSET as usize;
        img[rt..rt + 4].copy_from_slice(b"regi");
        img[rt + 8..rt + 12].copy_from_slice(&1u32.to_le_bytes());
        img[rt + 16..rt + 32].copy_from_slice(&METADATA_REGION);
        img[rt + 32..rt + 40].copy_from_slice(&(META as u64).to_le_bytes());
        img[rt + 40..rt + 44].copy_from_slice(&(128u32 * 1024).to_le_bytes());
        img[META..META + 8].copy_from_slice(b"metadata");
        img[META + 10..META + 12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        let mut data_at = 64 * 1024;
        for (i, (id, data)) in items.iter().enumerate() {
            let e = META + 32 + i * 32;
            img[e..e + 16].copy_from_slice(id);
            img[e + 16..e + 20].copy_from_slice(&(data_at as u32).to_le_bytes());
            img[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
            img[META + data_at..META + data_at + data.len()].copy_from_slice(data);
            data_at += 64;
        }
        img
    }

    fn run(img: Vec<u8>) -> Result<u64, Rejection> {
        let mut c = Cursor::new(img);
        let mut src = Source::new(&mut c).unwrap();
        analyze(&mut src)
    }

    fn params(flags: u32) -> Vec<u8> {
        let mut p = (32u32 << 20).to_le_bytes().to_vec();
        p.extend_from_slice(&flags.to_le_bytes());
        p
    }

    #[test]
    fn size_is_read() {
        let img = image(&[
            (FILE_PARAMETERS, params(0)),
            (VIRTUAL_DISK_SIZE, (5u64 << 30).to_le_bytes().to_vec()),
        ]);
        assert_eq!(run(img).unwrap(), 5 << 30);
    }

    #[test]
    fn has_parent_is_backing_file() {
        let img = image(&[
            (FILE_PARAMETERS, params(HAS_PARENT)),
            (VIRTUAL_DISK_SIZE, (1u64 << 30).to_le_bytes().to_vec()),
        ]);
        assert!(matches!(run(img), Err(Rejection::BackingFile)));
    }

    #[test]
    fn parent_locator_is_backing_file() {
        let img = image(&[
            (VIRTUAL_DISK_SIZE, (1u64 << 30).to_le_bytes().to_vec()),
            (PARENT_LOCATOR, vec![0u8; 64]),
        ]);
        assert!(matches!(run(img), Err(Rejection::BackingFile)));
    }

    #[test]
    fn pending_log_is_refused() {
        let mut img = image(&[(VIRTUAL_DISK_SIZE, (1u64 << 30).to_le_bytes().to_vec())]);
        img[64 * 1024 + 48] = 1;
        assert!(matches!(run(img), Err(Rejection::VhdxPendingLog)));
    }

    #[test]
    fn item_outside_region_is_malformed() {
        let mut img = image(&[(VIRTUAL_DISK_SIZE, (1u64 << 30).to_le_bytes().to_vec())]);
        let e = META + 32;
        img[e + 16..e + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(run(img), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn guid_byte_order() {
        // As found in a qemu-img created image.
        assert_eq!(
            METADATA_REGION,
            [
                0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f,
                0x88, 0x6e
            ]
        );
    }
}
