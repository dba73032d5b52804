//! Inspection must read a bounded amount of data, whatever the image size.

mod common;

use common::*;
use diskformat::{inspect, verify, DiskFormat, Rejection};
use std::fs::File;

#[test]
fn large_sparse_raw_reads_little() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.raw");
    let size = 100u64 << 30; // 100 GiB, sparse: costs no disk space
    File::create(&p).unwrap().set_len(size).unwrap();

    let mut r = CountingReader::new(File::open(&p).unwrap());
    let got = verify("raw", &mut r).unwrap();
    assert_eq!(got.format, DiskFormat::Raw);
    assert_eq!(got.virtual_size, size);
    assert_eq!(got.actual_size, size);
    assert!(
        r.bytes_read <= 16 * 1024,
        "read {} bytes in {} reads",
        r.bytes_read,
        r.reads
    );
}

#[test]
fn large_qcow2_reads_little() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_with_data(dir.path(), "src.raw", 256 << 20);
    let p = convert(&raw, dir.path(), "big.qcow2", "qcow2", &[]);
    let mut r = CountingReader::new(File::open(&p).unwrap());
    assert_eq!(inspect(&mut r).unwrap().format, DiskFormat::Qcow2);
    assert!(r.bytes_read <= 16 * 1024, "read {} bytes", r.bytes_read);
}

#[test]
fn text_without_nul_is_read_at_most_once_up_to_the_limit() {
    // A NUL-free file forces the VMDK text-descriptor probe to look for
    // createType; it must stop at the metadata limit, not read 8 MiB.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("text.img");
    std::fs::write(&p, vec![b'x'; 8 << 20]).unwrap();
    let mut r = CountingReader::new(File::open(&p).unwrap());
    assert_eq!(inspect(&mut r).unwrap().format, DiskFormat::Raw);
    let limit = diskformat::MAX_METADATA_BYTES;
    assert!(
        r.bytes_read <= limit + 64 * 1024,
        "read {} bytes",
        r.bytes_read
    );
}

#[test]
fn oversized_vmdk_descriptor_is_too_large() {
    // A descriptor file that never ends (no NUL) beyond the 1 MiB limit.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.vmdk");
    let mut text = b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicSparse\"\n".to_vec();
    while text.len() < (2 << 20) {
        text.extend_from_slice(b"# padding padding padding padding padding padding\n");
    }
    std::fs::write(&p, &text).unwrap();
    let mut r = CountingReader::new(File::open(&p).unwrap());
    let err = inspect(&mut r).unwrap_err();
    assert!(matches!(err, Rejection::TooLarge { .. }), "{err:?}");
    assert!(r.bytes_read <= diskformat::MAX_METADATA_BYTES + 64 * 1024);
}
