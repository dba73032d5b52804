//! Neutron's list queries, applied to rendered resources: filtering by any
//! attribute (repeated keys mean "any of"), `tags`/`tags-any`/`not-tags`/
//! `not-tags-any`, `fixed_ips=ip_address=…`, sorting with
//! `sort_key`/`sort_dir`, paging with `limit`/`marker`/`page_reverse` and
//! `<collection>_links`, and `fields=` selection.
//!
//! Collections are filtered in memory after a policy check per item: simple
//! and exact for the thousands of resources an all-in-one holds; pushing
//! the common filters into SQL is the known next step if that grows.

use std::cmp::Ordering;

use serde_json::{json, Map, Value};

use api::Error;

use super::body::shown;
use crate::app::fault;

/// Query keys that are not filters.
const CONTROL: &[&str] = &[
    "fields",
    "sort_key",
    "sort_dir",
    "limit",
    "marker",
    "page_reverse",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
];

/// The most items one page holds.
pub const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub pairs: Vec<(String, String)>,
    filters: Vec<(String, Vec<String>)>,
    fields: Vec<String>,
    sorts: Vec<(String, bool)>,
    limit: Option<usize>,
    marker: Option<String>,
    page_reverse: bool,
}

fn tag_list(v: &str) -> Vec<String> {
    v.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

impl ListQuery {
    /// Parses the query; `attrs` are the collection's attributes (what may
    /// be filtered on and sorted by).
    pub fn parse(pairs: &[(String, String)], attrs: &[&str]) -> Result<ListQuery, Error> {
        let mut q = ListQuery {
            pairs: pairs.to_vec(),
            ..Default::default()
        };
        let mut keys = Vec::new();
        let mut dirs = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "fields" => q
                    .fields
                    .extend(v.split(',').filter(|f| !f.is_empty()).map(str::to_string)),
                "sort_key" => {
                    if !attrs.contains(&v.as_str()) {
                        return Err(fault::bad_request(format!(
                            "{} is invalid attribute for sort_key",
                            shown(v)
                        )));
                    }
                    keys.push(v.clone());
                }
                "sort_dir" => match v.as_str() {
                    "asc" => dirs.push(true),
                    "desc" => dirs.push(false),
                    other => {
                        return Err(fault::bad_request(format!(
                            "{} is invalid value for sort_dir, valid value is 'asc' and 'desc'",
                            shown(other)
                        )))
                    }
                },
                "limit" => {
                    let n: i64 = v.parse().map_err(|_| {
                        fault::bad_request(format!(
                            "Invalid input for limit. Reason: '{}' is not an integer.",
                            shown(v)
                        ))
                    })?;
                    if n < 0 {
                        return Err(fault::bad_request(format!(
                            "Limit must be an integer 0 or greater and not '{n}'"
                        )));
                    }
                    // Neutron reads 0 as "no limit".
                    q.limit = (n > 0).then_some((n as usize).min(MAX_LIMIT));
                }
                "marker" => q.marker = Some(v.clone()),
                "page_reverse" => {
                    q.page_reverse = matches!(v.to_ascii_lowercase().as_str(), "true" | "1")
                }
                "tags" | "tags-any" | "not-tags" | "not-tags-any" => {}
                key => {
                    if !attrs.contains(&key) {
                        return Err(fault::bad_request(format!(
                            "[{}] is invalid attribute for filtering",
                            shown(key)
                        )));
                    }
                    match q.filters.iter_mut().find(|(fk, _)| fk == key) {
                        Some((_, vals)) => vals.push(v.clone()),
                        None => q.filters.push((key.to_string(), vec![v.clone()])),
                    }
                }
            }
        }
        if !dirs.is_empty() && dirs.len() != keys.len() {
            return Err(fault::bad_request(
                "The number of sort_keys and sort_dirs must be same",
            ));
        }
        q.sorts = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, dirs.get(i).copied().unwrap_or(true)))
            .collect();
        Ok(q)
    }

    /// Only the `fields=` of a query (for a single resource's GET).
    pub fn fields(pairs: &[(String, String)]) -> ListQuery {
        ListQuery {
            fields: pairs
                .iter()
                .filter(|(k, _)| k == "fields")
                .flat_map(|(_, v)| v.split(',').filter(|f| !f.is_empty()).map(str::to_string))
                .collect(),
            ..Default::default()
        }
    }

    /// Drops the filters and sort keys on attributes the caller may not
    /// read (policy `get_<resource>:<attr>`), so that a list cannot be used
    /// to probe their values: Neutron ignores such filters too (the
    /// attributes are not columns its queries know), and strips the
    /// attributes from what it answers.
    pub fn unreadable(mut self, attrs: &[&str]) -> ListQuery {
        self.filters.retain(|(k, _)| !attrs.contains(&k.as_str()));
        self.sorts.retain(|(k, _)| !attrs.contains(&k.as_str()));
        self
    }

    /// The value of a filter key, if given once.
    pub fn single(&self, key: &str) -> Option<&str> {
        match self.filters.iter().find(|(k, _)| k == key) {
            Some((_, v)) if v.len() == 1 => Some(v[0].as_str()),
            _ => None,
        }
    }

    fn matches(&self, item: &Value) -> bool {
        for (key, wanted) in &self.filters {
            let have = item.get(key).unwrap_or(&Value::Null);
            if !wanted.iter().any(|w| value_matches(key, have, w)) {
                return false;
            }
        }
        let tags: Vec<&str> = item
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (k, v) in &self.pairs {
            let want = tag_list(v);
            let ok = match k.as_str() {
                "tags" => want.iter().all(|t| tags.contains(&t.as_str())),
                "tags-any" => want.iter().any(|t| tags.contains(&t.as_str())),
                "not-tags" => !want.iter().all(|t| tags.contains(&t.as_str())),
                "not-tags-any" => !want.iter().any(|t| tags.contains(&t.as_str())),
                _ => true,
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Filters, sorts and pages `items`, strips `hidden` attributes and
    /// selects `fields`, and answers `{collection: [...]}` (with
    /// `<collection>_links` when paging).
    pub fn respond(
        &self,
        collection: &str,
        base_url: &str,
        items: Vec<Value>,
        hidden: &[&str],
    ) -> Result<Value, Error> {
        let mut items: Vec<Value> = items.into_iter().filter(|i| self.matches(i)).collect();
        if !self.sorts.is_empty() {
            items.sort_by(|a, b| {
                for (k, asc) in &self.sorts {
                    let o = compare(a.get(k), b.get(k));
                    let o = if *asc { o } else { o.reverse() };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                compare(a.get("id"), b.get("id"))
            });
        }
        let id_of = |v: &Value| {
            v.get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let paging = self.limit.is_some() || self.marker.is_some();
        let mut links = Vec::new();
        if paging {
            if self.page_reverse {
                items.reverse();
            }
            let start = match &self.marker {
                None => 0,
                Some(m) => {
                    items.iter().position(|x| id_of(x) == *m).ok_or_else(|| {
                        fault::not_found(
                            "NotFound",
                            format!("Marker {} could not be found.", shown(m)),
                        )
                    })? + 1
                }
            };
            let mut page: Vec<Value> = items.into_iter().skip(start).collect();
            let more = match self.limit {
                Some(l) if page.len() > l => {
                    page.truncate(l);
                    true
                }
                _ => false,
            };
            if self.page_reverse {
                page.reverse();
            }
            let link = |marker: &str, reverse: bool| {
                let mut q: Vec<(String, String)> = self
                    .pairs
                    .iter()
                    .filter(|(k, _)| k != "marker" && k != "page_reverse")
                    .cloned()
                    .collect();
                q.push(("marker".into(), marker.into()));
                if reverse {
                    q.push(("page_reverse".into(), "True".into()));
                }
                let qs: Vec<String> = q
                    .iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                    .collect();
                format!("{base_url}?{}", qs.join("&"))
            };
            let (first, last) = (page.first().map(&id_of), page.last().map(&id_of));
            let (next_marker, prev_marker) = if self.page_reverse {
                (
                    last.clone().filter(|_| self.marker.is_some()),
                    first.filter(|_| more),
                )
            } else {
                (
                    last.filter(|_| more),
                    first.filter(|_| self.marker.is_some()),
                )
            };
            if let Some(m) = next_marker {
                links.push(json!({"rel": "next", "href": link(&m, false)}));
            }
            if let Some(m) = prev_marker {
                links.push(json!({"rel": "previous", "href": link(&m, true)}));
            }
            items = page;
        }
        for it in &mut items {
            if let Value::Object(map) = it {
                for h in hidden {
                    map.remove(*h);
                }
                if !self.fields.is_empty() {
                    let keep: Map<String, Value> = map
                        .iter()
                        .filter(|(k, _)| self.fields.iter().any(|f| f == *k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    *map = keep;
                }
            }
        }
        let mut out = Map::new();
        out.insert(collection.to_string(), Value::Array(items));
        if paging {
            out.insert(format!("{collection}_links"), Value::Array(links));
        }
        Ok(Value::Object(out))
    }

    /// `fields=` applied to a single resource.
    pub fn select(&self, mut v: Value, hidden: &[&str]) -> Value {
        if let Value::Object(map) = &mut v {
            for h in hidden {
                map.remove(*h);
            }
            if !self.fields.is_empty() {
                map.retain(|k, _| self.fields.iter().any(|f| f == k));
            }
        }
        v
    }
}

/// Whether an attribute value matches one filter value (filter values are
/// strings: booleans match `true`/`True`/`1`, numbers their decimal form,
/// lists any element, `fixed_ips` entries `ip_address=…`/`subnet_id=…`).
fn value_matches(key: &str, have: &Value, want: &str) -> bool {
    match have {
        Value::Null => want.is_empty() || want == "None",
        Value::Bool(b) => match want.to_ascii_lowercase().as_str() {
            "true" | "1" => *b,
            "false" | "0" => !*b,
            _ => false,
        },
        Value::Number(n) => n.to_string() == want,
        Value::String(s) => s == want,
        Value::Array(items) => {
            if key == "fixed_ips" || key == "allowed_address_pairs" {
                let (k, v) = want.split_once('=').unwrap_or(("ip_address", want));
                return items
                    .iter()
                    .any(|i| i.get(k).and_then(Value::as_str) == Some(v));
            }
            items.iter().any(|i| match i {
                Value::String(s) => s == want,
                other => value_matches(key, other, want),
            })
        }
        Value::Object(_) => false,
    }
}

fn rank(v: Option<&Value>) -> u8 {
    match v {
        None | Some(Value::Null) => 0,
        Some(Value::Bool(_)) => 1,
        Some(Value::Number(_)) => 2,
        Some(Value::String(_)) => 3,
        _ => 4,
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
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

/// Whether a key is a query control rather than a filter.
pub fn is_control(key: &str) -> bool {
    CONTROL.contains(&key)
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

    fn items() -> Vec<Value> {
        vec![
            json!({"id": "a", "name": "x", "admin_state_up": true, "mtu": 1500, "tags": ["t1"], "fixed_ips": [{"ip_address": "10.0.0.3", "subnet_id": "s"}]}),
            json!({"id": "b", "name": "y", "admin_state_up": false, "mtu": 1450, "tags": ["t1", "t2"], "fixed_ips": []}),
            json!({"id": "c", "name": "x", "admin_state_up": true, "mtu": 9000, "tags": [], "fixed_ips": []}),
        ]
    }

    const ATTRS: &[&str] = &["id", "name", "admin_state_up", "mtu", "tags", "fixed_ips"];

    fn ids(v: &Value, key: &str) -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn filters() {
        let lq = ListQuery::parse(&q(&[("name", "x")]), ATTRS).unwrap();
        assert_eq!(
            ids(&lq.respond("n", "u", items(), &[]).unwrap(), "n"),
            ["a", "c"]
        );
        let lq = ListQuery::parse(&q(&[("admin_state_up", "False")]), ATTRS).unwrap();
        assert_eq!(
            ids(&lq.respond("n", "u", items(), &[]).unwrap(), "n"),
            ["b"]
        );
        let lq = ListQuery::parse(&q(&[("id", "a"), ("id", "b")]), ATTRS).unwrap();
        assert_eq!(
            ids(&lq.respond("n", "u", items(), &[]).unwrap(), "n"),
            ["a", "b"]
        );
        let lq = ListQuery::parse(&q(&[("tags", "t1,t2")]), ATTRS).unwrap();
        assert_eq!(
            ids(&lq.respond("n", "u", items(), &[]).unwrap(), "n"),
            ["b"]
        );
        let lq = ListQuery::parse(&q(&[("not-tags-any", "t1")]), ATTRS).unwrap();
        assert_eq!(
            ids(&lq.respond("n", "u", items(), &[]).unwrap(), "n"),
            ["c"]
        );
        let lq = ListQuery::parse(&q(&[("fixed_ips", "ip_address=10.0.0.3")]), ATTRS).unwrap();
        assert_eq!(
            ids(&lq.respond("n", "u", items(), &[]).unwrap(), "n"),
            ["a"]
        );
        let lq = ListQuery::parse(&q(&[("mtu", "1450")]), ATTRS).unwrap();
        assert_eq!(
            ids(&lq.respond("n", "u", items(), &[]).unwrap(), "n"),
            ["b"]
        );
        assert!(ListQuery::parse(&q(&[("bogus", "1")]), ATTRS).is_err());
    }

    #[test]
    fn sorting_paging_fields() {
        let lq = ListQuery::parse(&q(&[("sort_key", "mtu"), ("sort_dir", "desc")]), ATTRS).unwrap();
        assert_eq!(
            ids(&lq.respond("n", "u", items(), &[]).unwrap(), "n"),
            ["c", "a", "b"]
        );
        assert!(ListQuery::parse(&q(&[("sort_key", "nope")]), ATTRS).is_err());
        assert!(ListQuery::parse(&q(&[("sort_dir", "up")]), ATTRS).is_err());
        let lq = ListQuery::parse(&q(&[("limit", "2")]), ATTRS).unwrap();
        let r = lq.respond("n", "http://h/v2.0/n", items(), &[]).unwrap();
        assert_eq!(ids(&r, "n"), ["a", "b"]);
        let next = r["n_links"][0]["href"].as_str().unwrap();
        assert!(next.contains("marker=b"), "{next}");
        let lq = ListQuery::parse(&q(&[("limit", "2"), ("marker", "b")]), ATTRS).unwrap();
        let r = lq.respond("n", "u", items(), &[]).unwrap();
        assert_eq!(ids(&r, "n"), ["c"]);
        assert_eq!(r["n_links"][0]["rel"], "previous");
        let lq = ListQuery::parse(&q(&[("marker", "zz")]), ATTRS).unwrap();
        assert_eq!(lq.respond("n", "u", items(), &[]).unwrap_err().status, 404);
        let lq = ListQuery::parse(&q(&[("fields", "id"), ("fields", "mtu")]), ATTRS).unwrap();
        let r = lq.respond("n", "u", items(), &[]).unwrap();
        assert_eq!(r["n"][0], json!({"id": "a", "mtu": 1500}));
        let lq = ListQuery::parse(&q(&[]), ATTRS).unwrap();
        let r = lq.respond("n", "u", items(), &["mtu"]).unwrap();
        assert!(r["n"][0].get("mtu").is_none());
        assert!(ListQuery::parse(&q(&[("limit", "-1")]), ATTRS).is_err());
    }
}
