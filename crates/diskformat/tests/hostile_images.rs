//! Hostile images must be refused, each with the specific reason.

mod common;

use common::*;
use diskformat::{inspect, verify, verify_path, DiskFormat, Rejection};
use std::fs::File;
use std::path::Path;

fn inspect_path(p: &Path) -> Result<diskformat::Inspection, Rejection> {
    inspect(&mut File::open(p).unwrap())
}

/// Rejection messages go to API users: they must not leak where on the
/// host the image was inspected.
fn assert_no_host_path(err: &Rejection, dir: &Path) {
    let msg = err.to_string();
    assert!(!msg.is_empty());
    assert!(
        !msg.contains(dir.to_str().unwrap()),
        "message leaks the host path: {msg}"
    );
}

#[test]
fn qcow2_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    // -u: do not let qemu-img open the backing file while creating.
    let p = create(
        dir.path(),
        "backed.qcow2",
        "qcow2",
        "1M",
        &["-u", "-b", "/etc/passwd", "-F", "raw"],
    );
    let err = inspect_path(&p).unwrap_err();
    assert!(matches!(err, Rejection::BackingFile), "{err:?}");
    assert!(err.to_string().contains("backing file"));
    assert_no_host_path(&err, dir.path());
    assert!(matches!(
        verify_path("qcow2", &p),
        Err(Rejection::BackingFile)
    ));
    // Declared as raw, the mismatch is reported first.
    assert!(matches!(
        verify_path("raw", &p),
        Err(Rejection::FormatMismatch {
            detected: DiskFormat::Qcow2,
            ..
        })
    ));
}

#[test]
fn qcow2_v2_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(
        dir.path(),
        "backed.qcow2",
        "qcow2",
        "1M",
        &["-u", "-o", "compat=0.10", "-b", "/etc/shadow", "-F", "raw"],
    );
    assert!(matches!(inspect_path(&p), Err(Rejection::BackingFile)));
}

#[test]
fn qcow2_external_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("x.data");
    let opt = format!("data_file={}", data.display());
    let p = create(dir.path(), "ext.qcow2", "qcow2", "16M", &["-o", &opt]);
    let err = inspect_path(&p).unwrap_err();
    assert!(matches!(err, Rejection::ExternalDataFile), "{err:?}");
    assert!(err.to_string().contains("external data file"));
    assert_no_host_path(&err, dir.path());

    let opt = format!("data_file={},data_file_raw=on", data.display());
    let p = create(dir.path(), "ext-raw.qcow2", "qcow2", "16M", &["-o", &opt]);
    assert!(matches!(inspect_path(&p), Err(Rejection::ExternalDataFile)));
}

#[test]
fn qcow2_data_file_name_without_feature_bit() {
    // Clearing the feature bit must not be enough to smuggle the name in.
    let dir = tempfile::tempdir().unwrap();
    let opt = format!("data_file={}", dir.path().join("x.data").display());
    let p = create(dir.path(), "ext.qcow2", "qcow2", "16M", &["-o", &opt]);
    let mut features = read_bytes(&p, 72, 8);
    features[7] &= !(1 << 2);
    patch(&p, 72, &features);
    assert!(matches!(inspect_path(&p), Err(Rejection::ExternalDataFile)));
}

#[test]
fn qcow2_version_1() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "v1.qcow2", "qcow2", "16M", &[]);
    patch(&p, 4, &1u32.to_be_bytes());
    let err = inspect_path(&p).unwrap_err();
    assert!(matches!(err, Rejection::UnsupportedVersion(1)), "{err:?}");
    assert!(err.to_string().contains("version 1"));
    // And other unknown versions.
    patch(&p, 4, &4u32.to_be_bytes());
    assert!(matches!(
        inspect_path(&p),
        Err(Rejection::UnsupportedVersion(4))
    ));
}

#[test]
fn qcow2_unknown_incompatible_feature() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "feat.qcow2", "qcow2", "16M", &[]);
    let mut features = u64::from_be_bytes(read_bytes(&p, 72, 8).try_into().unwrap());
    features |= 1 << 20;
    patch(&p, 72, &features.to_be_bytes());
    let err = inspect_path(&p).unwrap_err();
    assert!(
        matches!(err, Rejection::UnknownIncompatibleFeatures(bits) if bits == 1 << 20),
        "{err:?}"
    );
    // The lowest unknown bit, right above the known ones.
    patch(&p, 72, &(1u64 << 5).to_be_bytes());
    assert!(matches!(
        inspect_path(&p),
        Err(Rejection::UnknownIncompatibleFeatures(0x20))
    ));
}

#[test]
fn qcow2_corrupt_bit() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "corrupt.qcow2", "qcow2", "16M", &[]);
    patch(&p, 72, &(1u64 << 1).to_be_bytes());
    assert!(matches!(inspect_path(&p), Err(Rejection::CorruptImage)));
}

#[test]
fn qcow2_declared_as_raw() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "sneaky.img", "qcow2", "1G", &[]);
    let err = verify_path("raw", &p).unwrap_err();
    match &err {
        Rejection::FormatMismatch { declared, detected } => {
            assert_eq!(declared, "raw");
            assert_eq!(*detected, DiskFormat::Qcow2);
        }
        other => panic!("expected mismatch, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "image content is qcow2 but its disk_format is declared as raw"
    );
    // Formats the inspector cannot read must still not hide a qcow2.
    for declared in ["ami", "ari", "aki", "vdi", "ploop", "iso", "vmdk", "vhd"] {
        assert!(
            matches!(
                verify_path(declared, &p),
                Err(Rejection::FormatMismatch { .. })
            ),
            "{declared}"
        );
    }
}

#[test]
fn vmdk_descriptor_naming_host_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("evil.vmdk");
    std::fs::write(
        &p,
        "# Disk DescriptorFile\n\
         version=1\n\
         CID=fffffffe\n\
         parentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\
         \n\
         # Extent description\n\
         RW 2048 FLAT \"/etc/passwd\" 0\n\
         \n\
         ddb.adapterType = \"ide\"\n",
    )
    .unwrap();
    let err = inspect_path(&p).unwrap_err();
    match &err {
        Rejection::VmdkExternalExtent(name) => assert_eq!(name, "/etc/passwd"),
        other => panic!("expected external extent, got {other:?}"),
    }
    assert!(err.to_string().contains("\"/etc/passwd\""));
    assert_no_host_path(&err, dir.path());
    assert!(matches!(
        verify_path("vmdk", &p),
        Err(Rejection::VmdkExternalExtent(_))
    ));
    // Uploaded as raw it is refused as a mismatch instead of passing.
    assert!(matches!(
        verify_path("raw", &p),
        Err(Rejection::FormatMismatch {
            detected: DiskFormat::Vmdk,
            ..
        })
    ));

    // Claiming a safe create type does not help.
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("monolithicFlat", "monolithicSparse");
    std::fs::write(&p, text).unwrap();
    assert!(matches!(
        inspect_path(&p),
        Err(Rejection::VmdkExternalExtent(_))
    ));
}

#[test]
fn vmdk_descriptor_with_unsafe_create_type_and_no_extents() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("vmfs.vmdk");
    std::fs::write(&p, "version=1\ncreateType=\"vmfs\"\n").unwrap();
    match inspect_path(&p) {
        Err(Rejection::VmdkUnsafeCreateType(t)) => assert_eq!(t, "vmfs"),
        other => panic!("expected unsafe create type, got {other:?}"),
    }
}

#[test]
fn vmdk_sparse_with_parent() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), "base.vmdk", "vmdk", "16M", &[]);
    let base = dir.path().join("base.vmdk");
    let p = create(
        dir.path(),
        "child.vmdk",
        "vmdk",
        "16M",
        &["-b", base.to_str().unwrap(), "-F", "vmdk"],
    );
    let err = inspect_path(&p).unwrap_err();
    assert!(matches!(err, Rejection::BackingFile), "{err:?}");
    assert_no_host_path(&err, dir.path());
}

#[test]
fn vmdk_sparse_with_embedded_flat_extent() {
    // Rewrite the embedded descriptor of a real monolithicSparse file so its
    // extent points at a host file (same length, so nothing else moves).
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "abcdefghijk.vmdk", "vmdk", "16M", &[]);
    let desc = read_bytes(&p, 512, 1024);
    let text = String::from_utf8_lossy(&desc).into_owned();
    let from = "SPARSE \"abcdefghijk.vmdk\"";
    let to = format!("{:<width$}", "FLAT \"/etc/passwd\" 0", width = from.len());
    let evil = text.replace(from, &to);
    assert_ne!(text, evil);
    assert_eq!(text.len(), evil.len());
    patch(&p, 512, evil.as_bytes());
    assert!(matches!(
        inspect_path(&p),
        Err(Rejection::VmdkExternalExtent(name)) if name == "/etc/passwd"
    ));
}

#[test]
fn vmdk_sparse_with_unsafe_create_type() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "t.vmdk", "vmdk", "16M", &[]);
    let desc = read_bytes(&p, 512, 1024);
    let text = String::from_utf8_lossy(&desc).into_owned();
    let evil = text.replace("\"monolithicSparse\"", "\"twoGbMaxExtentFlat\"");
    let evil = &evil[..text.len()]; // drop the overflow into NUL padding
    patch(&p, 512, evil.as_bytes());
    assert!(matches!(
        inspect_path(&p),
        Err(Rejection::VmdkUnsafeCreateType(t)) if t == "twoGbMaxExtentFlat"
    ));
}

#[test]
fn qcow2_plus_iso_signature_is_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "poly.img", "qcow2", "1G", &[]);
    // The qcow2 header cluster is zero at 0x8000: room for an ISO PVD.
    let iso = iso_bytes(64);
    patch(&p, 0x8000, &iso[0x8000..0x9000]);
    let err = inspect_path(&p).unwrap_err();
    match &err {
        Rejection::AmbiguousFormat(formats) => {
            assert_eq!(formats, &[DiskFormat::Qcow2, DiskFormat::Iso]);
        }
        other => panic!("expected ambiguity, got {other:?}"),
    }
    assert!(err.to_string().contains("qcow2, iso"));
    for declared in ["qcow2", "iso", "raw"] {
        assert!(matches!(
            verify_path(declared, &p),
            Err(Rejection::AmbiguousFormat(_))
        ));
    }
}

#[test]
fn vmdk_plus_vhd_footer_is_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let vmdk = create(dir.path(), "poly.vmdk", "vmdk", "16M", &[]);
    let vhd = create(
        dir.path(),
        "donor.vhd",
        "vpc",
        "16M",
        &["-o", "subformat=fixed"],
    );
    let len = std::fs::metadata(&vhd).unwrap().len();
    append(&vmdk, &read_bytes(&vhd, len - 512, 512));
    assert!(matches!(
        inspect_path(&vmdk),
        Err(Rejection::AmbiguousFormat(f)) if f == [DiskFormat::Vmdk, DiskFormat::Vhd]
    ));
}

#[test]
fn truncated_qcow2_header() {
    let dir = tempfile::tempdir().unwrap();
    let full = create(dir.path(), "full.qcow2", "qcow2", "1G", &[]);
    for len in [4usize, 48, 100] {
        let p = dir.path().join(format!("cut{len}.qcow2"));
        std::fs::write(&p, read_bytes(&full, 0, len)).unwrap();
        let err = inspect_path(&p).unwrap_err();
        assert!(matches!(err, Rejection::Malformed(_)), "{len}: {err:?}");
        assert!(err.to_string().contains("truncated"), "{err}");
        // Never "raw": a truncated qcow2 must not pass as raw data.
        assert!(matches!(
            verify_path("raw", &p),
            Err(Rejection::FormatMismatch { .. })
        ));
    }
}

#[test]
fn qed_is_refused_even_as_raw() {
    let dir = tempfile::tempdir().unwrap();
    let p = create(dir.path(), "old.qed", "qed", "16M", &[]);
    assert!(matches!(
        verify_path("raw", &p),
        Err(Rejection::BannedFormat("qed"))
    ));
}

#[test]
fn unreadable_path_does_not_leak() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("missing.img");
    let err = verify_path("raw", &p).unwrap_err();
    assert!(matches!(err, Rejection::Io(_)));
    assert_no_host_path(&err, dir.path());
}

#[test]
fn unknown_declared_format() {
    let mut c = std::io::Cursor::new(vec![0u8; 1024]);
    assert!(matches!(
        verify("qcow3", &mut c),
        Err(Rejection::UnsupportedDeclaredFormat(f)) if f == "qcow3"
    ));
}
