//! Helpers shared by the integration tests: building real images with
//! qemu-img, asking qemu-img for its view of them, and patching bytes.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs qemu-img, failing the test with its stderr if it fails.
pub fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img must be installed to run these tests");
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img create -q -f <fmt> [opts] <dir>/<name> <size>`.
pub fn create(dir: &Path, name: &str, fmt: &str, size: &str, opts: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let p = path.to_str().unwrap();
    let mut args = vec!["create", "-q", "-f", fmt];
    args.extend_from_slice(opts);
    args.push(p);
    args.push(size);
    qemu_img(&args);
    path
}

/// `qemu-img convert -O <fmt> [opts] <src> <dir>/<name>` from a raw source.
pub fn convert(src: &Path, dir: &Path, name: &str, fmt: &str, opts: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    args.extend_from_slice(opts);
    args.push(src.to_str().unwrap());
    args.push(path.to_str().unwrap());
    qemu_img(&args);
    path
}

/// The virtual size qemu-img reports when told the format explicitly
/// (parsed from the human output's "virtual size: ... (N bytes)" line).
pub fn qemu_virtual_size(path: &Path, fmt: &str) -> u64 {
    let out = Command::new("qemu-img")
        .args(["info", "-f", fmt, path.to_str().unwrap()])
        .output()
        .expect("qemu-img must be installed to run these tests");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("virtual size:"))
        .expect("virtual size line");
    let inner = &line[line.find('(').unwrap() + 1..line.find(" bytes)").unwrap()];
    inner.parse().unwrap()
}

/// A raw file with some non-zero data, so converted images hold real
/// clusters/grains/blocks rather than being all-sparse.
pub fn raw_with_data(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    // A recognisable pattern at a few offsets, never at 0 so the result
    // stays "raw" (and never 0x8001, which would look like an ISO).
    for (i, off) in [4096u64, size / 2, size - 8192].into_iter().enumerate() {
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&vec![0xA5 ^ i as u8; 4096]).unwrap();
    }
    path
}

/// Overwrites bytes of a file in place.
pub fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

/// Appends bytes to a file.
pub fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// Reads `len` bytes at `offset`.
pub fn read_bytes(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// A minimal ISO 9660 image written by hand: an empty system area, a
/// primary volume descriptor at 0x8000 declaring `blocks` 2048-byte
/// logical blocks, a set terminator, and zero padding up to the volume
/// size.
pub fn iso_bytes(blocks: u32) -> Vec<u8> {
    let mut img = vec![0u8; 16 * 2048];
    let mut pvd = vec![0u8; 2048];
    pvd[0] = 1; // primary volume descriptor
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1; // version
    pvd[40..48].copy_from_slice(b"FERROSTK"); // volume identifier (padded)
    pvd[80..84].copy_from_slice(&blocks.to_le_bytes());
    pvd[84..88].copy_from_slice(&blocks.to_be_bytes());
    pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
    pvd[130..132].copy_from_slice(&2048u16.to_be_bytes());
    img.extend_from_slice(&pvd);
    let mut term = vec![0u8; 2048];
    term[0] = 255;
    term[1..6].copy_from_slice(b"CD001");
    term[6] = 1;
    img.extend_from_slice(&term);
    img.resize(blocks as usize * 2048, 0);
    img
}

/// A `Read + Seek` wrapper that counts the bytes actually read.
pub struct CountingReader<R> {
    pub inner: R,
    pub bytes_read: u64,
    pub reads: u64,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R) -> Self {
        CountingReader {
            inner,
            bytes_read: 0,
            reads: 0,
        }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes_read += n as u64;
        self.reads += 1;
        Ok(n)
    }
}

impl<R: Seek> Seek for CountingReader<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}
