//! Positioned, bounded reads over a `Read + Seek` stream, plus the
//! big/little-endian field decoding every format module needs.

use std::io::{self, Read, Seek, SeekFrom};

use crate::{malformed, Rejection, MAX_METADATA_BYTES};

/// A stream with a known length, read only at explicit offsets.
///
/// Every read goes through [`Source::read_at`], so the amount of data the
/// inspector touches is exactly what the format modules ask for.
pub(crate) struct Source<'a, R: ?Sized> {
    inner: &'a mut R,
    len: u64,
}

impl<'a, R: Read + Seek + ?Sized> Source<'a, R> {
    /// Wraps `inner`, learning its length by seeking to the end (footer
    /// based formats such as VHD need it, and it is the raw virtual size).
    pub(crate) fn new(inner: &'a mut R) -> io::Result<Self> {
        let len = inner.seek(SeekFrom::End(0))?;
        Ok(Source { inner, len })
    }

    /// Total stream length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Reads up to `buf.len()` bytes at `offset`, returning how many were
    /// read. The count is short only when the stream ends first.
    pub(crate) fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let available = self.len - offset;
        let want = usize::try_from(available).map_or(buf.len(), |a| a.min(buf.len()));
        self.inner.seek(SeekFrom::Start(offset))?;
        let mut done = 0;
        while done < want {
            match self.inner.read(&mut buf[done..want]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Fills `buf` from `offset`, or rejects the image as truncated. `what`
    /// names the structure for the error message.
    pub(crate) fn read_exact_at(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        what: &str,
    ) -> Result<(), Rejection> {
        if self.read_at(offset, buf)? < buf.len() {
            return Err(malformed(format!("{what} is truncated")));
        }
        Ok(())
    }

    /// Reads NUL-terminated text starting at `offset`, the way QEMU's C code
    /// sees a VMDK descriptor: everything up to the first NUL byte or the
    /// end of the stream. Reads in small chunks so that the common,
    /// NUL-padded descriptor costs a few KiB.
    ///
    /// At most [`MAX_METADATA_BYTES`] are returned; the flag is `true` when
    /// the text continues beyond that, so callers can decide whether an
    /// over-long text is an error or just "not a descriptor".
    pub(crate) fn read_c_text(&mut self, offset: u64) -> io::Result<(Vec<u8>, bool)> {
        const CHUNK: usize = 16 * 1024;
        let limit = MAX_METADATA_BYTES;
        // Read at most one byte past the limit: enough to tell "exactly at
        // the limit, then NUL or EOF" from "too long".
        let end = offset.saturating_add(limit + 1).min(self.len);
        let mut text = Vec::new();
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let pos = offset.saturating_add(text.len() as u64);
            if pos >= end {
                break;
            }
            let want = usize::try_from(end - pos).map_or(CHUNK, |w| w.min(CHUNK));
            let n = self.read_at(pos, &mut chunk[..want])?;
            let got = &chunk[..n];
            if let Some(nul) = got.iter().position(|&b| b == 0) {
                text.extend_from_slice(&got[..nul]);
                break;
            }
            text.extend_from_slice(got);
            if n < want {
                // End of stream: the text simply runs to EOF.
                break;
            }
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let overflow = text.len() > limit;
        text.truncate(limit);
        Ok((text, overflow))
    }
}

/// Big-endian u16 at `at`. Callers pass buffers whose length they checked.
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Big-endian u32 at `at`.
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Big-endian u64 at `at`.
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// Little-endian u16 at `at`.
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Little-endian u32 at `at`.
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Little-endian u64 at `at`.
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn read_at_is_short_only_at_eof() {
        let mut c = Cursor::new((0u8..10).collect::<Vec<_>>());
        let mut s = Source::new(&mut c).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(s.read_at(8, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], &[8, 9]);
        assert_eq!(s.read_at(10, &mut buf).unwrap(), 0);
        assert_eq!(s.read_at(u64::MAX, &mut buf).unwrap(), 0);
    }

    #[test]
    fn c_text_stops_at_nul_and_is_bounded() {
        let mut data = b"hello".to_vec();
        data.push(0);
        data.extend_from_slice(b"ignored");
        let mut c = Cursor::new(data);
        let mut s = Source::new(&mut c).unwrap();
        assert_eq!(s.read_c_text(0).unwrap(), (b"hello".to_vec(), false));

        let mut big = Cursor::new(vec![b'a'; (MAX_METADATA_BYTES as usize) + 10]);
        let mut s = Source::new(&mut big).unwrap();
        let (text, overflow) = s.read_c_text(0).unwrap();
        assert!(overflow);
        assert_eq!(text.len(), MAX_METADATA_BYTES as usize);

        let mut exact = Cursor::new(vec![b'a'; MAX_METADATA_BYTES as usize]);
        let mut s = Source::new(&mut exact).unwrap();
        let (text, overflow) = s.read_c_text(0).unwrap();
        assert!(!overflow);
        assert_eq!(text.len(), MAX_METADATA_BYTES as usize);
    }

    #[test]
    fn endian_helpers() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(be16(&b, 0), 0x0102);
        assert_eq!(le16(&b, 0), 0x0201);
        assert_eq!(be32(&b, 0), 0x01020304);
        assert_eq!(le32(&b, 0), 0x04030201);
        assert_eq!(be64(&b, 0), 0x0102030405060708);
        assert_eq!(le64(&b, 0), 0x0807060504030201);
    }
}
