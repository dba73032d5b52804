//! Checks a request head before hyper parses it.
//!
//! hyper answers a head it cannot accept (a control character in a header,
//! a bad `Content-Length`, a URI or header block over its limits) itself,
//! with an empty body. So the connection reads each head first, checks it
//! here with the same parser hyper uses (`httparse`) and the same rules
//! hyper then applies, and only hands hyper heads that hyper will accept.
//! A refused head is answered with the service's JSON error instead.

use axum::http::StatusCode;

/// The longest request target accepted; longer ones get 414. Eventlet's
/// `MAX_REQUEST_LINE`, under which OpenStack services ran, is 8192 bytes.
pub const MAX_URI_BYTES: usize = 8192;
/// The most header fields in one request; more get 431 (hyper's default).
pub const MAX_HEADERS: usize = 100;
/// The largest head (request line and header fields); larger get 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How the body after an accepted head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body, or `Content-Length: 0`.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A head that is refused, with what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    /// The request path as far as it could be read, to choose the error
    /// body's shape; empty when not even that could be read.
    pub path: String,
}

/// What the bytes read so far hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// Not a whole head yet, and nothing wrong so far.
    Partial,
    /// A head of `len` bytes hyper will accept, followed by a body framed so.
    Complete {
        len: usize,
        framing: Framing,
    },
    Refused(Refusal),
}

/// Checks the head at the start of `buf`.
pub fn inspect(buf: &[u8]) -> Head {
    // The request line is checked first: a 200 KB URL is refused as too
    // long (414), not as too large a header block (431).
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    let line_end = buf[start..].iter().position(|b| *b == b'\n');
    let line = &buf[start..start + line_end.unwrap_or(buf.len() - start)];
    let target = request_target(line);
    if target.len() > MAX_URI_BYTES {
        return refuse(
            StatusCode::URI_TOO_LONG,
            format!("The request URL is too long: the limit is {MAX_URI_BYTES} bytes."),
            target,
        );
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return too_large(target);
        }
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => return too_large(target),
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("The request is malformed: {}.", describe(e)),
                target,
            )
        }
    };
    if len > MAX_HEAD_BYTES {
        return too_large(target);
    }
    let path = req.path.unwrap_or_default();
    if path.parse::<axum::http::Uri>().is_err() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The request URL is malformed.".into(),
            path.as_bytes(),
        );
    }
    let http11 = req.version == Some(1);
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "Transfer-Encoding is not allowed in an HTTP/1.0 request.".into(),
                    path.as_bytes(),
                );
            }
            // As hyper reads it: the last header's last coding decides.
            chunked = Some(last_coding_is_chunked(h.value));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_content_length(h.value) else {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "Content-Length must be a non-negative integer below 2^64.".into(),
                    path.as_bytes(),
                );
            };
            if length.is_some_and(|l| l != n) {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "The request has several different Content-Length values.".into(),
                    path.as_bytes(),
                );
            }
            length = Some(n);
        }
    }
    let framing = match (chunked, length) {
        (Some(false), _) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "The last Transfer-Encoding of a request must be chunked.".into(),
                path.as_bytes(),
            )
        }
        // hyper ignores Content-Length next to chunked (and closes after).
        (Some(true), _) => Framing::Chunked,
        (None, Some(0) | None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    Head::Complete { len, framing }
}

fn refuse(status: StatusCode, message: String, path: &[u8]) -> Head {
    let path = String::from_utf8_lossy(path);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    // Only the prefix chooses the error shape; a path is never echoed.
    let path: String = path.chars().take(64).collect();
    Head::Refused(Refusal {
        status,
        message,
        path,
    })
}

fn too_large(path: &[u8]) -> Head {
    refuse(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!(
            "The request's header fields are too large: at most {MAX_HEADERS} fields \
             and {MAX_HEAD_BYTES} bytes."
        ),
        path,
    )
}

/// The target of a request line (`METHOD SP target SP version`), as far as
/// it has arrived.
fn request_target(line: &[u8]) -> &[u8] {
    let Some(sp) = line.iter().position(|b| *b == b' ') else {
        return &[];
    };
    let rest = &line[sp + 1..];
    let end = rest
        .iter()
        .position(|b| *b == b' ' || *b == b'\r')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// hyper's rule: a list of equal decimal numbers, digits only.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        // hyper keeps u64::MAX as its "unknown length" marker.
        if n == u64::MAX || found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .map(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .unwrap_or(false)
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "a header name is invalid",
        httparse::Error::HeaderValue => "a header value holds a control character",
        httparse::Error::NewLine => "a line ends wrongly",
        httparse::Error::Status => "the status is invalid",
        httparse::Error::Token => "the method or URL is invalid",
        httparse::Error::Version => "the HTTP version is invalid",
        httparse::Error::TooManyHeaders => "there are too many header fields",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(h: &Head) -> Option<StatusCode> {
        match h {
            Head::Refused(r) => Some(r.status),
            _ => None,
        }
    }

    #[test]
    fn accepts_ordinary_heads_and_frames_their_bodies() {
        let h = inspect(b"GET /identity/v3 HTTP/1.1\r\nHost: x\r\n\r\nrest");
        assert_eq!(
            h,
            Head::Complete {
                len: 38,
                framing: Framing::Empty
            }
        );
        let h = inspect(b"POST /image HTTP/1.1\r\nContent-Length: 12\r\n\r\n");
        assert!(matches!(
            h,
            Head::Complete {
                framing: Framing::Length(12),
                ..
            }
        ));
        let h = inspect(b"PUT /image HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(matches!(
            h,
            Head::Complete {
                framing: Framing::Chunked,
                ..
            }
        ));
        assert_eq!(inspect(b"GET /identity HTTP/1.1\r\nHo"), Head::Partial);
    }

    #[test]
    fn refuses_what_hyper_would_refuse() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET /a HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400),
            (b"GET /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (b"GET /a HTTP/1.1\r\nContent-Length: +1\r\n\r\n", 400),
            (
                b"GET /a HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
            ),
            (
                b"GET /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (b"GET /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (
                b"GET /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(
                status(&inspect(raw)).map(|s| s.as_u16()),
                Some(*want),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let long = format!("GET /image/{} HTTP/1.1\r\n", "a".repeat(MAX_URI_BYTES));
        let h = inspect(long.as_bytes());
        assert_eq!(status(&h), Some(StatusCode::URI_TOO_LONG));
        let Head::Refused(r) = h else { unreachable!() };
        assert!(r.path.starts_with("/image/"));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let h = inspect(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
        assert_eq!(
            status(&h),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(MAX_HEAD_BYTES));
        let h = inspect(big.as_bytes());
        assert_eq!(
            status(&h),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }
}
