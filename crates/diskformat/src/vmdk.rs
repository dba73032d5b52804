//! VMDK checks.
//!
//! A VMDK is either a *sparse extent* file (magic `KDMV`, a 512-byte
//! little-endian header followed by an embedded text descriptor) or a bare
//! text *descriptor file* whose extent lines name the files holding the
//! data. Only the single-file variants `monolithicSparse` and
//! `streamOptimized` are safe: every other create type, and every extent
//! line naming another file, would make QEMU open a path chosen by the
//! image (CVE-2024-32498).
//!
//! Sparse extent header (VMware "Virtual Disk Format 1.1"), little-endian:
//!
//! | offset | field |
//! |-------:|-------|
//! | 0  | magic `KDMV` |
//! | 4  | version (1..=3) |
//! | 12 | capacity (sectors) |
//! | 28 | descriptorOffset (sectors) |
//! | 36 | descriptorSize (sectors) |
//! | 56 | gdOffset (`u64::MAX` = grain directory in the footer) |
//!
//! Beyond the oslo.utils inspector this also refuses:
//! * `parentFileNameHint` anywhere in the descriptor: QEMU's
//!   `vmdk_parent_open` turns it into a backing file for sparse images;
//! * a zero-capacity sparse header: QEMU then reads the embedded descriptor
//!   as a full descriptor file and follows its extents;
//! * extent names with `:` or `\`, since QEMU treats `proto:...` names as
//!   protocol URLs (`nbd:`, ...), not just `/` paths;
//! * a descriptor naming `createType` more than once, since QEMU takes the
//!   first textual occurrence (even inside a comment);
//! * the legacy ESX `COWD` sparse format, which QEMU also probes.

use std::io::{Read, Seek};

use crate::source::{le32, le64, Source};
use crate::{echo, malformed, Rejection};

const MAGIC_SPARSE: &[u8; 4] = b"KDMV";
/// VMware ESX 2.x "vmfsSparse" (COW disk) extents.
const MAGIC_COWD: &[u8; 4] = b"COWD";
const SECTOR: u64 = 512;
/// The embedded descriptor must start at sector 1, as QEMU and VMware
/// write it; QEMU's parent lookup reads from there regardless of the
/// header, so a descriptor elsewhere would not be the one QEMU uses.
const DESC_SECTOR: u64 = 1;
const GD_AT_END: u64 = u64::MAX;
const MARKER_EOS: u32 = 0;
const MARKER_FOOTER: u32 = 3;

/// The create types whose data lives entirely in the image file.
const SAFE_CREATE_TYPES: [&str; 2] = ["monolithicSparse", "streamOptimized"];

/// What the VMDK probe found.
pub(crate) enum Probe {
    /// A `KDMV` sparse extent with an embedded descriptor.
    Sparse,
    /// A legacy `COWD` sparse extent.
    Cowd,
    /// A standalone text descriptor (already read).
    Descriptor(Vec<u8>),
}

/// Recognises sparse headers by magic and text descriptors the way QEMU
/// does: its probe accepts text whose first non-comment line is
/// `version=1..3`, and when told the format is vmdk it accepts any text
/// containing `createType`. Both count here, so nothing QEMU would open as
/// a VMDK descriptor can pass as raw.
pub(crate) fn probe<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    head: &[u8],
) -> Result<Option<Probe>, Rejection> {
    if head.starts_with(MAGIC_SPARSE) {
        return Ok(Some(Probe::Sparse));
    }
    if head.starts_with(MAGIC_COWD) {
        return Ok(Some(Probe::Cowd));
    }
    if qemu_probe_says_descriptor(head) {
        let (text, overflow) = src.read_c_text(0)?;
        if overflow {
            return Err(Rejection::TooLarge {
                what: "VMDK descriptor",
                limit: crate::MAX_METADATA_BYTES,
            });
        }
        return Ok(Some(Probe::Descriptor(text)));
    }
    // QEMU's descriptor code treats the file as a C string, so text that
    // contains a NUL early cannot be a descriptor; binary disks almost
    // always have one in their first sector. Only NUL-free heads are read
    // further.
    if head.contains(&0) {
        return Ok(None);
    }
    // QEMU reads at most 1 MiB of a descriptor file, so text beyond the
    // limit is invisible to it and does not make the file a descriptor.
    let (text, _overflow) = src.read_c_text(0)?;
    if contains_ci(&text, b"createtype") {
        return Ok(Some(Probe::Descriptor(text)));
    }
    Ok(None)
}

/// QEMU's `vmdk_probe` rule for text: skip `#` comment lines and lines of
/// spaces, then the first line must be exactly `version=1`, `2` or `3`.
fn qemu_probe_says_descriptor(head: &[u8]) -> bool {
    let mut rest = head;
    loop {
        match rest.first() {
            None => return false,
            Some(b'#') => {
                rest = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(&[][..], |nl| &rest[nl + 1..]);
            }
            Some(b' ') => {
                let spaces = rest.iter().take_while(|&&b| b == b' ').count();
                rest = &rest[spaces..];
                if rest.first() == Some(&b'\r') {
                    rest = &rest[1..];
                }
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    _ => return false,
                }
            }
            Some(_) => {
                return [b'1', b'2', b'3'].iter().any(|v| {
                    let mut unix = b"version=X\n".to_vec();
                    unix[8] = *v;
                    let mut dos = b"version=X\r\n".to_vec();
                    dos[8] = *v;
                    rest.starts_with(&unix) || rest.starts_with(&dos)
                });
            }
        }
    }
}

fn contains_ci(haystack: &[u8], needle_lower: &[u8]) -> bool {
    count_ci(haystack, needle_lower) > 0
}

fn count_ci(haystack: &[u8], needle_lower: &[u8]) -> usize {
    if needle_lower.is_empty() || haystack.len() < needle_lower.len() {
        return 0;
    }
    haystack
        .windows(needle_lower.len())
        .filter(|w| w.eq_ignore_ascii_case(needle_lower))
        .count()
}

/// Runs the VMDK safety checks and returns the virtual size.
pub(crate) fn analyze<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    head: &[u8],
    probe: Probe,
) -> Result<u64, Rejection> {
    match probe {
        // The COWD header carries a parent file name and the format is
        // only ever a component of a multi-file "vmfsSparse" disk.
        Probe::Cowd => Err(Rejection::VmdkUnsafeCreateType("vmfsSparse".into())),
        Probe::Descriptor(text) => {
            let desc = Descriptor::parse(&text)?;
            check_standalone(&desc)
        }
        Probe::Sparse => analyze_sparse(src, head),
    }
}

/// The fields of a sparse extent header this crate uses.
#[derive(Debug, PartialEq, Eq)]
struct SparseHeader {
    version: u32,
    capacity: u64,
    desc_offset: u64,
    desc_size: u64,
    gd_offset: u64,
}

impl SparseHeader {
    /// Parses the 64 bytes of header fields; `b` must start at the magic.
    fn parse(b: &[u8]) -> Result<SparseHeader, Rejection> {
        if b.len() < 64 {
            return Err(malformed("VMDK header is truncated"));
        }
        Ok(SparseHeader {
            version: le32(b, 4),
            capacity: le64(b, 12),
            desc_offset: le64(b, 28),
            desc_size: le64(b, 36),
            gd_offset: le64(b, 56),
        })
    }
}

fn analyze_sparse<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    head: &[u8],
) -> Result<u64, Rejection> {
    let header = SparseHeader::parse(head)?;
    if !(1..=3).contains(&header.version) {
        return Err(malformed(format!(
            "VMDK sparse extent version {} is not supported",
            header.version
        )));
    }
    if header.capacity == 0 {
        // QEMU's vmdk_open_vmdk4 then parses the embedded descriptor as a
        // standalone descriptor file and opens its extents.
        return Err(malformed(
            "VMDK sparse header has zero capacity, which makes QEMU treat the embedded descriptor as a descriptor file",
        ));
    }
    if header.desc_offset != DESC_SECTOR || header.desc_size == 0 {
        return Err(malformed(
            "VMDK embedded descriptor is not at the expected location",
        ));
    }

    // QEMU's view of the descriptor is the C string at sector 1, however
    // long desc_size claims it is; check exactly that.
    let (text, overflow) = src.read_c_text(DESC_SECTOR * SECTOR)?;
    if overflow {
        return Err(Rejection::TooLarge {
            what: "VMDK embedded descriptor",
            limit: crate::MAX_METADATA_BYTES,
        });
    }
    let desc = Descriptor::parse(&text)?;
    check_embedded(&desc)?;

    let capacity = if header.gd_offset == GD_AT_END {
        check_footer(src, &header)?
    } else {
        header.capacity
    };
    capacity
        .checked_mul(SECTOR)
        .ok_or_else(|| malformed("VMDK capacity overflows"))
}

/// streamOptimized images may put the real header in a footer (header
/// gdOffset = GD_AT_END). QEMU then uses the footer's header *instead of*
/// the first one, so the footer must agree with what was checked, and its
/// capacity is the one QEMU will use.
fn check_footer<R: Read + Seek + ?Sized>(
    src: &mut Source<'_, R>,
    header: &SparseHeader,
) -> Result<u64, Rejection> {
    let len = src.len();
    if len < 1536 + SECTOR {
        return Err(malformed("VMDK footer is missing"));
    }
    // footer marker (512) | footer header (512) | end-of-stream marker (512)
    let mut tail = [0u8; 1536];
    src.read_exact_at(len - 1536, &mut tail, "VMDK footer")?;
    let (marker, rest) = tail.split_at(512);
    let (footer, eos) = rest.split_at(512);

    let marker_ok = le32(marker, 8) == 0
        && le32(marker, 12) == MARKER_FOOTER
        && marker[16..].iter().all(|&b| b == 0);
    let eos_ok = eos.iter().all(|&b| b == 0) && le32(eos, 12) == MARKER_EOS;
    if !marker_ok || !eos_ok {
        return Err(malformed("VMDK footer markers are invalid"));
    }
    if !footer.starts_with(MAGIC_SPARSE) {
        return Err(malformed("VMDK footer has no header signature"));
    }
    let f = SparseHeader::parse(footer)?;
    if f.version != header.version
        || f.desc_offset != header.desc_offset
        || f.desc_size != header.desc_size
    {
        return Err(malformed("VMDK footer disagrees with the header"));
    }
    if f.gd_offset == GD_AT_END {
        return Err(malformed("VMDK footer points at another footer"));
    }
    if f.capacity == 0 {
        return Err(malformed("VMDK footer has zero capacity"));
    }
    Ok(f.capacity)
}

/// One extent line: `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
#[derive(Debug)]
struct Extent {
    /// Extent type, upper-cased (`SPARSE`, `FLAT`, `ZERO`, `VMFS`, ...).
    kind: String,
    /// The quoted file name, if any.
    file: Option<String>,
}

/// The parts of a descriptor the checks need.
#[derive(Debug)]
struct Descriptor {
    create_type: Option<String>,
    extents: Vec<Extent>,
}

impl Descriptor {
    /// Parses descriptor text cautiously: every line must be a comment, a
    /// `key=value` header line, a `ddb.` line or an extent line; anything
    /// else is refused (as upstream does) because a line we do not
    /// understand may mean something to QEMU or VMware.
    fn parse(raw: &[u8]) -> Result<Descriptor, Rejection> {
        // Substring checks run on the raw text, because that is how QEMU
        // looks these keys up (strstr), line structure notwithstanding.
        if contains_ci(raw, b"parentfilenamehint") {
            return Err(Rejection::BackingFile);
        }
        let create_type_mentions = count_ci(raw, b"createtype");
        if create_type_mentions > 1 {
            return Err(malformed(
                "VMDK descriptor mentions createType more than once",
            ));
        }

        let text = String::from_utf8_lossy(raw);
        let mut create_type = None;
        let mut extents = Vec::new();
        for line in text.split('\n') {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or_default();
            if ["RW", "RDONLY", "NOACCESS"]
                .iter()
                .any(|a| first.eq_ignore_ascii_case(a))
            {
                extents.push(parse_extent(line)?);
                continue;
            }
            if line.len() >= 4 && line[..4].eq_ignore_ascii_case("ddb.") {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && !key.contains(char::is_whitespace) {
                    if key.eq_ignore_ascii_case("createType") {
                        create_type = Some(value.trim().trim_matches('"').to_owned());
                    }
                    continue;
                }
            }
            return Err(malformed("VMDK descriptor contains an unrecognised line"));
        }
        if create_type_mentions == 1 && create_type.is_none() {
            return Err(malformed(
                "VMDK descriptor mentions createType outside a createType line",
            ));
        }
        Ok(Descriptor {
            create_type,
            extents,
        })
    }
}

fn parse_extent(line: &str) -> Result<Extent, Rejection> {
    let (fields, file) = match line.split_once('"') {
        Some((before, after)) => {
            let (name, _offset) = after
                .split_once('"')
                .ok_or_else(|| malformed("VMDK extent line has an unterminated file name"))?;
            (before, Some(name.to_owned()))
        }
        None => (line, None),
    };
    let fields: Vec<&str> = fields.split_whitespace().collect();
    if fields.len() != 3 || fields[1].parse::<u64>().is_err() {
        return Err(malformed("VMDK extent line is malformed"));
    }
    Ok(Extent {
        kind: fields[2].to_ascii_uppercase(),
        file,
    })
}

fn is_safe_create_type(create_type: &str) -> bool {
    SAFE_CREATE_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(create_type))
}

/// A name that can only refer to a file next to the image (by convention
/// the image itself): no directory part, no drive or protocol prefix.
fn is_bare_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', ':'])
        && !name.chars().any(char::is_control)
}

/// A standalone descriptor file holds no data itself: every extent it
/// lists is another file, so it is always refused. The error says why as
/// precisely as possible.
fn check_standalone(desc: &Descriptor) -> Result<u64, Rejection> {
    if let Some(file) = desc.extents.iter().find_map(|e| e.file.as_deref()) {
        return Err(Rejection::VmdkExternalExtent(echo(file)));
    }
    match &desc.create_type {
        Some(ct) if !is_safe_create_type(ct) => Err(Rejection::VmdkUnsafeCreateType(echo(ct))),
        _ => Err(malformed("VMDK descriptor file contains no image data")),
    }
}

/// The descriptor embedded in a sparse extent must describe exactly that
/// one file.
fn check_embedded(desc: &Descriptor) -> Result<(), Rejection> {
    let create_type = desc
        .create_type
        .as_deref()
        .ok_or_else(|| malformed("VMDK descriptor has no createType"))?;
    if !is_safe_create_type(create_type) {
        return Err(Rejection::VmdkUnsafeCreateType(echo(create_type)));
    }
    for (i, extent) in desc.extents.iter().enumerate() {
        match &extent.file {
            // The single SPARSE extent of a monolithic file names the image
            // itself; anything after it is necessarily another file.
            Some(f) if i == 0 && extent.kind == "SPARSE" && is_bare_file_name(f) => {}
            Some(f) => return Err(Rejection::VmdkExternalExtent(echo(f))),
            None => {
                return Err(malformed(format!(
                    "VMDK {} extent is not valid in a {create_type} image",
                    echo(&extent.kind)
                )))
            }
        }
    }
    if desc.extents.is_empty() {
        return Err(malformed("VMDK descriptor declares no extents"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const GOOD_DESC: &str = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\n# Extent description\nRW 2048 SPARSE \"disk.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n";

    /// A monolithicSparse image: header, descriptor at sector 1, padding.
    fn sparse(desc: &str) -> Vec<u8> {
        let mut img = vec![0u8; 64 * 1024];
        img[..4].copy_from_slice(MAGIC_SPARSE);
        img[4..8].copy_from_slice(&1u32.to_le_bytes());
        img[12..20].copy_from_slice(&2048u64.to_le_bytes());
        img[20..28].copy_from_slice(&128u64.to_le_bytes());
        img[28..36].copy_from_slice(&1u64.to_le_bytes());
        img[36..44].copy_from_slice(&20u64.to_le_bytes());
        img[56..64].copy_from_slice(&30u64.to_le_bytes());
        img[512..512 + desc.len()].copy_from_slice(desc.as_bytes());
        img
    }

    fn run(img: Vec<u8>) -> Result<u64, Rejection> {
        let mut c = Cursor::new(img);
        let mut src = Source::new(&mut c).unwrap();
        let mut head = vec![0u8; 2048];
        let n = src.read_at(0, &mut head).unwrap();
        head.truncate(n);
        let p = probe(&mut src, &head)?.expect("probe should match");
        analyze(&mut src, &head, p)
    }

    #[test]
    fn good_sparse_is_accepted() {
        assert_eq!(run(sparse(GOOD_DESC)).unwrap(), 2048 * 512);
    }

    #[test]
    fn parent_hint_is_a_backing_file() {
        let desc = GOOD_DESC.replace(
            "parentCID=ffffffff",
            "parentCID=1\nparentFileNameHint=\"base.vmdk\"",
        );
        assert!(matches!(run(sparse(&desc)), Err(Rejection::BackingFile)));
    }

    #[test]
    fn flat_extent_in_sparse_is_external() {
        let desc = GOOD_DESC.replace(
            "RW 2048 SPARSE \"disk.vmdk\"",
            "RW 2048 SPARSE \"disk.vmdk\"\nRW 2048 FLAT \"other.img\" 0",
        );
        match run(sparse(&desc)) {
            Err(Rejection::VmdkExternalExtent(f)) => assert_eq!(f, "other.img"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn protocol_names_are_external() {
        let desc = GOOD_DESC.replace("\"disk.vmdk\"", "\"nbd:evil.example:10809\"");
        assert!(matches!(
            run(sparse(&desc)),
            Err(Rejection::VmdkExternalExtent(_))
        ));
    }

    #[test]
    fn unsafe_create_type_in_sparse() {
        let desc = GOOD_DESC.replace("monolithicSparse", "vmfsSparse");
        match run(sparse(&desc)) {
            Err(Rejection::VmdkUnsafeCreateType(t)) => assert_eq!(t, "vmfsSparse"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn duplicate_create_type_is_malformed() {
        let desc = GOOD_DESC.replace("#DDB", "# createType=\"monolithicFlat\"");
        assert!(matches!(run(sparse(&desc)), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn unknown_line_is_malformed() {
        let desc = GOOD_DESC.replace("#DDB", "surprise me");
        assert!(matches!(run(sparse(&desc)), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn zero_capacity_is_refused() {
        let mut img = sparse(GOOD_DESC);
        img[12..20].copy_from_slice(&0u64.to_le_bytes());
        assert!(matches!(run(img), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn unterminated_descriptor_is_too_large() {
        let mut img = sparse(GOOD_DESC);
        img.resize(3 << 20, b'#');
        let end = 512 + GOOD_DESC.len();
        img[end..].fill(b'#');
        assert!(matches!(run(img), Err(Rejection::TooLarge { .. })));
    }

    fn with_footer(capacity: u64) -> Vec<u8> {
        let mut img = sparse(GOOD_DESC);
        img[56..64].copy_from_slice(&GD_AT_END.to_le_bytes());
        img[77..79].copy_from_slice(&1u16.to_le_bytes());
        let mut footer_marker = vec![0u8; 512];
        footer_marker[0..8].copy_from_slice(&1u64.to_le_bytes());
        footer_marker[12..16].copy_from_slice(&MARKER_FOOTER.to_le_bytes());
        let mut footer = img[..512].to_vec();
        footer[12..20].copy_from_slice(&capacity.to_le_bytes());
        footer[56..64].copy_from_slice(&30u64.to_le_bytes());
        img.extend_from_slice(&footer_marker);
        img.extend_from_slice(&footer);
        img.extend_from_slice(&[0u8; 512]);
        img
    }

    #[test]
    fn footer_capacity_wins() {
        assert_eq!(run(with_footer(4096)).unwrap(), 4096 * 512);
    }

    #[test]
    fn footer_pointing_at_footer_is_refused() {
        let mut img = with_footer(4096);
        let footer_at = img.len() - 1024;
        img[footer_at + 56..footer_at + 64].copy_from_slice(&GD_AT_END.to_le_bytes());
        assert!(matches!(run(img), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn qemu_probe_rule() {
        assert!(qemu_probe_says_descriptor(b"# c\n   \nversion=1\n"));
        assert!(qemu_probe_says_descriptor(b"version=3\r\nx"));
        assert!(!qemu_probe_says_descriptor(b"hello\nversion=1\n"));
        assert!(!qemu_probe_says_descriptor(b"version=4\n"));
    }

    #[test]
    fn standalone_without_version_line_is_still_a_descriptor() {
        let text = b"createType=\"monolithicFlat\"\nRW 10 FLAT \"/dev/sda\" 0\n".to_vec();
        match run(text) {
            Err(Rejection::VmdkExternalExtent(f)) => assert_eq!(f, "/dev/sda"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn plain_text_is_not_a_descriptor() {
        let mut c = Cursor::new(b"just some text, nothing to see".to_vec());
        let mut src = Source::new(&mut c).unwrap();
        let head = b"just some text, nothing to see".to_vec();
        assert!(probe(&mut src, &head).unwrap().is_none());
    }
}
