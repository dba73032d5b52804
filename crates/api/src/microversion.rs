//! Microversions: `OpenStack-API-Version: <service> <major>.<minor>`.

use axum::http::{HeaderMap, StatusCode};

use crate::Error;

/// A microversion, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32) -> Self {
        Version { major, minor }
    }
    pub fn parse(s: &str) -> Option<Version> {
        let (a, b) = s.trim().split_once('.')?;
        Some(Version {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Picks the version a request asks for. `legacy_header` is a service's
/// older header (`X-OpenStack-Nova-API-Version`), if it has one. No header
/// means the minimum; `latest` means the maximum; outside the range is 406.
pub fn negotiate(
    headers: &HeaderMap,
    service_type: &str,
    legacy_header: Option<&str>,
    min: Version,
    max: Version,
) -> Result<Version, Error> {
    let mut requested: Option<String> = None;
    for v in headers.get_all("openstack-api-version") {
        let Ok(v) = v.to_str() else { continue };
        // The header may list several services, comma separated.
        for item in v.split(',') {
            let mut it = item.split_whitespace();
            if let (Some(svc), Some(ver)) = (it.next(), it.next()) {
                if svc.eq_ignore_ascii_case(service_type) {
                    requested = Some(ver.to_string());
                }
            }
        }
    }
    if requested.is_none() {
        if let Some(h) = legacy_header {
            requested = headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().to_string());
        }
    }
    let Some(req) = requested else {
        return Ok(min);
    };
    if req.eq_ignore_ascii_case("latest") {
        return Ok(max);
    }
    let v = Version::parse(&req).ok_or_else(|| {
        Error::bad_request(format!(
            "API version string {req} format is invalid: use MAJOR.MINOR or latest"
        ))
    })?;
    if v < min || v > max {
        return Err(Error::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "Version {v} is not supported by the API. Minimum is {min} and maximum is {max}."
            ),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("openstack-api-version", v.parse().unwrap());
        m
    }

    #[test]
    fn negotiation() {
        let (min, max) = (Version::new(2, 1), Version::new(2, 96));
        assert_eq!(
            negotiate(&HeaderMap::new(), "compute", None, min, max).unwrap(),
            min
        );
        assert_eq!(
            negotiate(&h("compute 2.60"), "compute", None, min, max).unwrap(),
            Version::new(2, 60)
        );
        assert_eq!(
            negotiate(&h("compute latest"), "compute", None, min, max).unwrap(),
            max
        );
        assert_eq!(
            negotiate(&h("volume 3.5, compute 2.10"), "compute", None, min, max).unwrap(),
            Version::new(2, 10)
        );
        assert_eq!(
            negotiate(&h("compute 2.200"), "compute", None, min, max)
                .unwrap_err()
                .status,
            406
        );
        assert_eq!(
            negotiate(&h("compute two"), "compute", None, min, max)
                .unwrap_err()
                .status,
            400
        );
        assert!(Version::new(2, 9) < Version::new(2, 10));
    }
}
