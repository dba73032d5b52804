//! Pagination and sorting as OpenStack APIs take them: `limit` and `marker`
//! query parameters, `sort_key`/`sort_dir` (Nova, Neutron) or `sort=k:dir`
//! (Glance), and a `next` link carrying the marker of the last item shown.

use crate::Error;

/// Parsed `limit` and `marker`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub limit: Option<usize>,
    pub marker: Option<String>,
}

impl Page {
    /// Reads `limit` and `marker` from query pairs; `max` caps `limit`.
    pub fn from_query(pairs: &[(String, String)], max: usize) -> Result<Page, Error> {
        let mut page = Page::default();
        for (k, v) in pairs {
            match k.as_str() {
                "limit" => {
                    let n: i64 = v.parse().map_err(|_| {
                        Error::bad_request(format!(
                            "limit must be a non-negative integer, got {v:?}"
                        ))
                    })?;
                    if n < 0 {
                        return Err(Error::bad_request("limit must be a non-negative integer"));
                    }
                    page.limit = Some((n as usize).min(max));
                }
                "marker" => page.marker = Some(v.clone()),
                _ => {}
            }
        }
        Ok(page)
    }

    /// Applies the page to items already in their final order: skips up to
    /// and including the marker (404 if the marker is unknown, as upstream
    /// answers) and cuts at the limit. Returns the items and whether more
    /// remain.
    pub fn apply<T>(
        &self,
        items: Vec<T>,
        id: impl Fn(&T) -> &str,
    ) -> Result<(Vec<T>, bool), Error> {
        let start =
            match &self.marker {
                None => 0,
                Some(m) => {
                    items.iter().position(|x| id(x) == m).ok_or_else(|| {
                        Error::not_found(format!("Marker {m} could not be found."))
                    })? + 1
                }
            };
        let mut items: Vec<T> = items.into_iter().skip(start).collect();
        let more = match self.limit {
            Some(l) if items.len() > l => {
                items.truncate(l);
                true
            }
            _ => false,
        };
        Ok((items, more))
    }
}

/// The URL of the next page: the request's URL with `marker` replaced.
pub fn next_link(base_url: &str, pairs: &[(String, String)], marker: &str) -> String {
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "marker")
        .cloned()
        .collect();
    out.push(("marker".into(), marker.to_string()));
    let q: Vec<String> = out
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("{base_url}?{}", q.join("&"))
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Asc,
    Desc,
}

/// Reads `sort_key`/`sort_dir` pairs (repeated) and Glance's `sort=k:dir,k2`,
/// accepting only `allowed` keys.
pub fn sort_keys(
    pairs: &[(String, String)],
    allowed: &[&str],
) -> Result<Vec<(String, Dir)>, Error> {
    let dir = |s: &str| match s {
        "asc" => Ok(Dir::Asc),
        "desc" => Ok(Dir::Desc),
        other => Err(Error::bad_request(format!(
            "Invalid sort direction {other:?}: use asc or desc"
        ))),
    };
    let check = |k: &str| {
        if allowed.contains(&k) {
            Ok(k.to_string())
        } else {
            Err(Error::bad_request(format!("Invalid sort key {k:?}")))
        }
    };
    let mut keys = Vec::new();
    let mut dirs = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "sort_key" => keys.push(check(v)?),
            "sort_dir" => dirs.push(dir(v)?),
            "sort" => {
                for part in v.split(',').filter(|p| !p.is_empty()) {
                    let (key, d) = part.split_once(':').unwrap_or((part, "asc"));
                    keys.push(check(key.trim())?);
                    dirs.push(dir(d.trim())?);
                }
            }
            _ => {}
        }
    }
    Ok(keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k, dirs.get(i).copied().unwrap_or(Dir::Asc)))
        .collect())
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn limit_and_marker() {
        let p = Page::from_query(&q(&[("limit", "2"), ("marker", "b")]), 1000).unwrap();
        let (items, more) = p.apply(vec!["a", "b", "c", "d", "e"], |x| x).unwrap();
        assert_eq!(items, vec!["c", "d"]);
        assert!(more);
        assert!(Page::from_query(&q(&[("limit", "x")]), 10).is_err());
        assert!(Page::from_query(&q(&[("limit", "-1")]), 10).is_err());
        let p = Page::from_query(&q(&[("marker", "zz")]), 10).unwrap();
        assert_eq!(p.apply(vec!["a"], |x| x).unwrap_err().status, 404);
        assert_eq!(
            next_link(
                "http://h/v2/images",
                &q(&[("limit", "2"), ("marker", "a")]),
                "c d"
            ),
            "http://h/v2/images?limit=2&marker=c%20d"
        );
    }

    #[test]
    fn sorting() {
        let s = sort_keys(
            &q(&[("sort", "name:asc,created_at:desc")]),
            &["name", "created_at"],
        )
        .unwrap();
        assert_eq!(
            s,
            vec![("name".into(), Dir::Asc), ("created_at".into(), Dir::Desc)]
        );
        let s = sort_keys(&q(&[("sort_key", "name"), ("sort_dir", "desc")]), &["name"]).unwrap();
        assert_eq!(s, vec![("name".into(), Dir::Desc)]);
        assert!(sort_keys(&q(&[("sort_key", "password")]), &["name"]).is_err());
        assert!(sort_keys(&q(&[("sort_key", "name"), ("sort_dir", "up")]), &["name"]).is_err());
    }
}
