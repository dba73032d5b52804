//! `/v2/images/{id}/file` (upload and download, streamed both ways) and
//! `/v2/images/{id}/stage`.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use api::{Ctx, Error};

use super::{no_content, S};
use crate::app::data;

/// Read size of the download stream.
const READ_CHUNK: usize = 256 * 1024;

fn check_octet_stream(headers: &HeaderMap) -> Result<(), Error> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    if ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/octet-stream")
    {
        Ok(())
    } else {
        Err(Error::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {ct:?} is not supported for image data: use application/octet-stream."),
        ))
    }
}

/// The size the client announced (`Content-Length`, or Glance's
/// `X-OpenStack-Image-Size` with chunked bodies).
fn declared_len(headers: &HeaderMap) -> Option<u64> {
    [header::CONTENT_LENGTH.as_str(), "x-openstack-image-size"]
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok()?.trim().parse().ok())
}

pub async fn upload(
    State(svc): S,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    check_octet_stream(&headers)?;
    data::upload(
        &svc,
        &ctx,
        &id,
        body.into_data_stream(),
        declared_len(&headers),
    )
    .await?;
    Ok(no_content())
}

pub async fn stage(
    State(svc): S,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    check_octet_stream(&headers)?;
    data::stage(
        &svc,
        &ctx,
        &id,
        body.into_data_stream(),
        declared_len(&headers),
    )
    .await?;
    Ok(no_content())
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range against a
/// size; `Err` means unsatisfiable (416).
fn parse_range(h: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        // Several ranges: serve the whole image, as is allowed.
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let r = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse().ok()?
        };
        if start >= size || end < start {
            return Some(Err(()));
        }
        (start, end.min(size - 1))
    };
    Some(Ok(r))
}

pub async fn download(
    State(svc): S,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let (img, target) = svc.visible(&ctx, &id).await?;
    svc.policy.enforce("download_image", &ctx, &target)?;
    if img.row.status == "deactivated" && !ctx.is_admin() {
        return Err(Error::forbidden(
            "The requested image has been deactivated. Image data download is forbidden.",
        ));
    }
    if !matches!(img.row.status.as_str(), "active" | "deactivated") || img.row.store.is_none() {
        return Ok(no_content());
    }
    let file = svc.store.open(&id).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(format!("Image data for {id} was not found."))
        } else {
            Error::internal(&e)
        }
    })?;
    let size = file.metadata().map_err(|e| Error::internal(&e))?.len();
    let mut file = tokio::fs::File::from_std(file);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| parse_range(h, size));
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(sum) = img
        .row
        .checksum
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        builder = builder.header("content-md5", sum);
    }
    let resp = match range {
        Some(Err(())) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response())
        }
        Some(Ok((start, end))) => {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| Error::internal(&e))?;
            let len = end - start + 1;
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_LENGTH, len)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
                .body(Body::from_stream(ReaderStream::with_capacity(
                    file.take(len),
                    READ_CHUNK,
                )))
        }
        None => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size)
            .body(Body::from_stream(ReaderStream::with_capacity(
                file, READ_CHUNK,
            ))),
    };
    resp.map_err(|e| Error::internal(&e))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=95-200", 100), Some(Ok((95, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
