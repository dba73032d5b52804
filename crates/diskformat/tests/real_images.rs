//! Images produced by qemu-img itself must be detected as the right format
//! with the same virtual size qemu-img reports.

mod common;

use common::*;
use diskformat::{inspect, verify, verify_path, DiskFormat, Rejection};
use std::fs::File;
use std::path::Path;

const GIB: u64 = 1 << 30;

/// Inspects `path`, checks format and size (against qemu-img's own answer
/// too), and checks that `verify` with each of `declared` accepts it.
fn check(path: &Path, format: DiskFormat, qemu_fmt: &str, declared: &[&str]) -> u64 {
    let got = inspect(&mut File::open(path).unwrap()).unwrap();
    assert_eq!(got.format, format, "{}", path.display());
    assert_eq!(
        got.virtual_size,
        qemu_virtual_size(path, qemu_fmt),
        "virtual size of {}",
        path.display()
    );
    assert_eq!(got.actual_size, std::fs::metadata(path).unwrap().len());
    for d in declared {
        assert_eq!(verify_path(d, path).unwrap(), got, "declared {d}");
    }
    got.virtual_size
}

fn assert_mismatch(declared: &str, path: &Path, detected: DiskFormat) {
    match verify(declared, &mut File::open(path).unwrap()) {
        Err(Rejection::FormatMismatch {
            declared: d,
            detected: got,
        }) => {
            assert_eq!(d, declared);
            assert_eq!(got, detected);
        }
        other => panic!("declared {declared}: expected a mismatch, got {other:?}"),
    }
}

#[test]
fn raw() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "disk.raw", "raw", "64M", &[]);
    assert_eq!(
        check(
            &p,
            DiskFormat::Raw,
            "raw",
            &["raw", "ami", "aki", "ari", "vdi", "ploop"]
        ),
        64 << 20
    );
    for declared in ["qcow2", "vmdk", "vhd", "vhdx", "iso"] {
        assert_mismatch(declared, &p, DiskFormat::Raw);
    }
}

#[test]
fn qcow2_v3() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "v3.qcow2", "qcow2", "1G", &[]);
    assert_eq!(read_bytes(&p, 4, 4), 3u32.to_be_bytes());
    assert_eq!(check(&p, DiskFormat::Qcow2, "qcow2", &["qcow2"]), GIB);
}

#[test]
fn qcow2_v2_compat_0_10() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(
        dir.path(),
        "v2.qcow2",
        "qcow2",
        "1G",
        &["-o", "compat=0.10"],
    );
    assert_eq!(read_bytes(&p, 4, 4), 2u32.to_be_bytes());
    assert_eq!(check(&p, DiskFormat::Qcow2, "qcow2", &["qcow2"]), GIB);
}

#[test]
fn qcow2_with_data_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_with_data(dir.path(), "src.raw", 32 << 20);
    // Exercise the optional-but-harmless features: lazy refcounts, zstd
    // compression (incompatible bit 3), extended L2 (bit 4), small clusters.
    for (name, opts) in [
        ("plain.qcow2", vec![]),
        ("lazy.qcow2", vec!["-o", "lazy_refcounts=on"]),
        ("zstd.qcow2", vec!["-c", "-o", "compression_type=zstd"]),
        ("l2.qcow2", vec!["-o", "extended_l2=on,cluster_size=128k"]),
        ("small.qcow2", vec!["-o", "cluster_size=512"]),
    ] {
        let p = convert(&raw, dir.path(), name, "qcow2", &opts);
        assert_eq!(
            check(&p, DiskFormat::Qcow2, "qcow2", &["qcow2"]),
            32 << 20,
            "{name}"
        );
    }
}

#[test]
fn vmdk_monolithic_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "sparse.vmdk", "vmdk", "1G", &[]);
    assert_eq!(check(&p, DiskFormat::Vmdk, "vmdk", &["vmdk"]), GIB);
    let raw = raw_with_data(dir.path(), "src.raw", 16 << 20);
    let p = convert(
        &raw,
        dir.path(),
        "data.vmdk",
        "vmdk",
        &["-o", "subformat=monolithicSparse"],
    );
    assert_eq!(check(&p, DiskFormat::Vmdk, "vmdk", &["vmdk"]), 16 << 20);
    assert_mismatch("raw", &p, DiskFormat::Vmdk);
}

#[test]
fn vmdk_stream_optimized() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(
        dir.path(),
        "stream.vmdk",
        "vmdk",
        "1G",
        &["-o", "subformat=streamOptimized"],
    );
    assert_eq!(check(&p, DiskFormat::Vmdk, "vmdk", &["vmdk"]), GIB);
    let raw = raw_with_data(dir.path(), "src.raw", 16 << 20);
    let p = convert(
        &raw,
        dir.path(),
        "data.vmdk",
        "vmdk",
        &["-o", "subformat=streamOptimized"],
    );
    assert_eq!(check(&p, DiskFormat::Vmdk, "vmdk", &["vmdk"]), 16 << 20);
}

#[test]
fn vmdk_monolithic_flat_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(
        dir.path(),
        "flat.vmdk",
        "vmdk",
        "16M",
        &["-o", "subformat=monolithicFlat"],
    );
    // The descriptor is all there is in flat.vmdk; the data is next door.
    match inspect(&mut File::open(&p).unwrap()) {
        Err(Rejection::VmdkExternalExtent(name)) => assert_eq!(name, "flat-flat.vmdk"),
        other => panic!("expected an external extent rejection, got {other:?}"),
    }
    assert!(matches!(
        verify("vmdk", &mut File::open(&p).unwrap()),
        Err(Rejection::VmdkExternalExtent(_))
    ));
    // The flat extent itself is just raw data.
    let flat = dir.path().join("flat-flat.vmdk");
    assert_eq!(verify_path("raw", &flat).unwrap().format, DiskFormat::Raw);
}

#[test]
fn vmdk_two_gb_split_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(
        dir.path(),
        "split.vmdk",
        "vmdk",
        "16M",
        &["-o", "subformat=twoGbMaxExtentSparse"],
    );
    assert!(matches!(
        inspect(&mut File::open(&p).unwrap()),
        Err(Rejection::VmdkExternalExtent(_))
    ));
}

#[test]
fn vhd_dynamic() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "dyn.vhd", "vpc", "1G", &[]);
    // qemu-img rounds the size to a CHS geometry; it must match qemu's view.
    let size = check(&p, DiskFormat::Vhd, "vpc", &["vhd", "vpc"]);
    assert!(size >= GIB);
    let raw = raw_with_data(dir.path(), "src.raw", 16 << 20);
    let p = convert(&raw, dir.path(), "data.vhd", "vpc", &[]);
    check(&p, DiskFormat::Vhd, "vpc", &["vhd", "vpc"]);
    assert_mismatch("raw", &p, DiskFormat::Vhd);
}

#[test]
fn vhd_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(
        dir.path(),
        "fixed.vhd",
        "vpc",
        "64M",
        &["-o", "subformat=fixed"],
    );
    check(&p, DiskFormat::Vhd, "vpc", &["vhd", "vpc"]);
    // A fixed VHD is raw data plus a footer; declared raw it is refused,
    // since the footer says otherwise.
    assert_mismatch("raw", &p, DiskFormat::Vhd);
    let p = create(
        dir.path(),
        "exact.vhd",
        "vpc",
        "64M",
        &["-o", "subformat=fixed,force_size=on"],
    );
    assert_eq!(check(&p, DiskFormat::Vhd, "vpc", &["vhd"]), 64 << 20);
}

#[test]
fn vhdx() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "disk.vhdx", "vhdx", "1G", &[]);
    assert_eq!(check(&p, DiskFormat::Vhdx, "vhdx", &["vhdx"]), GIB);
    let raw = raw_with_data(dir.path(), "src.raw", 16 << 20);
    let p = convert(&raw, dir.path(), "data.vhdx", "vhdx", &[]);
    assert_eq!(check(&p, DiskFormat::Vhdx, "vhdx", &["vhdx"]), 16 << 20);
    assert_mismatch("vhd", &p, DiskFormat::Vhdx);
}

#[test]
fn iso_hand_built() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("disc.iso");
    std::fs::write(&p, iso_bytes(300)).unwrap();
    let got = verify_path("iso", &p).unwrap();
    assert_eq!(got.format, DiskFormat::Iso);
    assert_eq!(got.virtual_size, 300 * 2048);
    assert_eq!(got.actual_size, 300 * 2048);
    assert_mismatch("raw", &p, DiskFormat::Iso);
    assert_mismatch("ami", &p, DiskFormat::Iso);
}

#[test]
fn iso_hybrid_with_mbr_and_gpt_is_still_iso() {
    // isohybrid images put an MBR (and often a GPT) in the system area;
    // upstream accepts exactly this overlap.
    let mut img = iso_bytes(300);
    img[446 + 4] = 0xEE; // protective MBR partition
    img[510] = 0x55;
    img[511] = 0xAA;
    img[512..520].copy_from_slice(b"EFI PART");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hybrid.iso");
    std::fs::write(&p, img).unwrap();
    assert_eq!(verify_path("iso", &p).unwrap().format, DiskFormat::Iso);
}

#[test]
fn raw_with_partition_table_is_raw() {
    let mut img = vec![0u8; 8 << 20];
    img[446] = 0x80;
    img[446 + 4] = 0x83;
    img[510] = 0x55;
    img[511] = 0xAA;
    img[512..520].copy_from_slice(b"EFI PART");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("disk.img");
    std::fs::write(&p, img).unwrap();
    let got = verify_path("raw", &p).unwrap();
    assert_eq!(got.format, DiskFormat::Raw);
    assert_eq!(got.virtual_size, 8 << 20);
}

#[test]
fn huge_virtual_size_is_reported() {
    // Enforcing flavor limits is the caller's job; the size must be exact.
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "huge.qcow2", "qcow2", "1P", &[]);
    let got = verify_path("qcow2", &p).unwrap();
    assert_eq!(got.virtual_size, 1 << 50);
    assert!(got.actual_size < 1 << 30);
}

#[test]
fn qcow2_luks_encrypted() {
    // LUKS encryption adds a crypt_method and a header extension; neither
    // is a safety problem (QEMU needs the secret to read anything).
    let dir = tempfile::tempdir().unwrap();
    let p = create(
        dir.path(),
        "enc.qcow2",
        "qcow2",
        "16M",
        &[
            "--object",
            "secret,id=sec0,data=not-a-real-secret",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        ],
    );
    let got = verify_path("qcow2", &p).unwrap();
    assert_eq!(got.format, DiskFormat::Qcow2);
    assert_eq!(got.virtual_size, 16 << 20);
}

#[test]
fn iso_converted_into_container_formats_is_not_ambiguous() {
    // An ISO's volume descriptor must not surface at 0x8000 of a container
    // holding it, or legitimate conversions would be refused.
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("disc.iso");
    std::fs::write(&iso, iso_bytes(2048)).unwrap();
    for (name, fmt, qemu_fmt, format) in [
        ("disc.qcow2", "qcow2", "qcow2", DiskFormat::Qcow2),
        ("disc.vmdk", "vmdk", "vmdk", DiskFormat::Vmdk),
        ("disc.vhdx", "vhdx", "vhdx", DiskFormat::Vhdx),
        ("disc.vhd", "vpc", "vpc", DiskFormat::Vhd),
    ] {
        let p = convert(&iso, dir.path(), name, fmt, &[]);
        let got = inspect(&mut File::open(&p).unwrap()).unwrap();
        assert_eq!(got.format, format, "{name}");
        assert_eq!(got.virtual_size, qemu_virtual_size(&p, qemu_fmt), "{name}");
    }
}
