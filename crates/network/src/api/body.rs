//! Reading Neutron request bodies attribute by attribute, with upstream's
//! validators and messages ("Invalid input for name. Reason: …"), and the
//! final check that nothing unknown or read-only was sent.

use std::net::IpAddr;

use serde_json::{Map, Value};

use api::Error;
use netmodel::Cidr;

use crate::app::addr;
use crate::app::fault;

/// Neutron's `NAME_FIELD_SIZE`, `DESCRIPTION_FIELD_SIZE`, `DEVICE_*_FIELD_SIZE`.
pub const NAME_MAX: usize = 255;
pub const DESCRIPTION_MAX: usize = 255;
pub const DEVICE_MAX: usize = 255;
/// Tags: Neutron's `MAX_TAG_LEN`.
pub const TAG_MAX: usize = 255;
/// Tags on one resource.
pub use crate::app::tags::TAGS_PER_RESOURCE;

/// Whether this is a create (POST) or an update (PUT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
}

/// The object under a body's resource key (`{"network": {...}}`).
pub struct Body {
    obj: Map<String, Value>,
}

/// Shows user input in a message: bounded, with control characters escaped.
pub fn shown(v: &str) -> String {
    let s: String = v.chars().take(64).collect();
    let s = s.escape_debug().to_string();
    if v.chars().count() > 64 {
        format!("{s}…")
    } else {
        s
    }
}

fn shown_value(v: &Value) -> String {
    match v {
        Value::String(s) => shown(s),
        other => shown(&other.to_string()),
    }
}

/// Characters Neutron's `name_string` refuses anywhere (Unicode "other"
/// categories: controls, format characters, private use; line and
/// paragraph separators). Cn (unassigned) needs Unicode tables and is let
/// through.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{0600}'..='\u{0605}' | '\u{061c}' | '\u{06dd}' | '\u{070f}'
            | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}' | '\u{e000}'..='\u{f8ff}'
            | '\u{f0000}'..='\u{10ffff}')
}

/// Neutron's `name_string`: printable, and no white space at either end.
pub fn valid_name(s: &str) -> bool {
    !s.chars().any(is_unprintable)
        && !s.starts_with(char::is_whitespace)
        && !s.ends_with(char::is_whitespace)
}

/// A `dns_name`: an RFC 1123 hostname or FQDN (labels of 1–63 letters,
/// digits and hyphens, not starting or ending with a hyphen; at most 255
/// characters; not all-numeric at the top level). Empty means none.
pub fn valid_dns_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 255 {
        return Err(format!(
            "'{}' exceeds the 255 character FQDN limit",
            shown(s)
        ));
    }
    let trimmed = s.strip_suffix('.').unwrap_or(s);
    let labels: Vec<&str> = trimmed.split('.').collect();
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return Err(format!(
                "'{}' not a valid PQDN or FQDN. Reason: labels must be 1 to 63 characters long",
                shown(s)
            ));
        }
        if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || l.starts_with('-')
            || l.ends_with('-')
        {
            return Err(format!(
                "'{}' not a valid PQDN or FQDN. Reason: labels may only hold letters, digits and inner hyphens",
                shown(s)
            ));
        }
    }
    if labels.len() > 1
        && labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "'{}' not a valid PQDN or FQDN. Reason: TLD must not be all numeric",
            shown(s)
        ));
    }
    Ok(())
}

/// A `dns_domain`: a FQDN ending in '.', or empty.
pub fn valid_dns_domain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if !s.ends_with('.') {
        return Err(format!("'{}' is not a FQDN", shown(s)));
    }
    valid_dns_name(s)
}

impl Body {
    /// Takes `{"<resource>": {...}}` apart.
    pub fn new(v: Value, resource: &'static str) -> Result<Body, Error> {
        let Value::Object(mut top) = v else {
            return Err(fault::bad_request(format!(
                "Unable to find '{resource}' in request body"
            )));
        };
        match top.remove(resource) {
            Some(Value::Object(obj)) => Ok(Body { obj }),
            Some(_) => Err(fault::bad_request(format!(
                "Invalid input for {resource}. Reason: expected a JSON object."
            ))),
            None => Err(fault::bad_request(format!(
                "Unable to find '{resource}' in request body"
            ))),
        }
    }

    /// The body of an action (`add_router_interface`), which has no
    /// resource key.
    pub fn bare(v: Value) -> Result<Body, Error> {
        match v {
            Value::Object(obj) => Ok(Body { obj }),
            _ => Err(fault::bad_request(
                "The request body must be a JSON object.",
            )),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.obj.contains_key(key)
    }

    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.obj.remove(key)
    }

    fn string_value(key: &str, v: Value, max: usize) -> Result<String, Error> {
        match v {
            Value::String(s) => {
                if s.chars().count() > max {
                    return Err(fault::invalid_attr(
                        key,
                        format!("'{}' exceeds maximum length of {max}", shown(&s)),
                    ));
                }
                Ok(s)
            }
            other => Err(fault::invalid_attr(
                key,
                format!("'{}' is not a valid string", shown_value(&other)),
            )),
        }
    }

    /// A plain string with no control characters at all (device ids and
    /// owners, hosts, and the like).
    pub fn string(&mut self, key: &str, max: usize) -> Result<Option<String>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => {
                let s = Self::string_value(key, v, max)?;
                if s.chars().any(is_unprintable) {
                    return Err(fault::invalid_attr(
                        key,
                        format!("'{}' is not a valid string", shown(&s)),
                    ));
                }
                Ok(Some(s))
            }
        }
    }

    /// A `name_string` (`null` is refused as Neutron does).
    pub fn name(&mut self, key: &str) -> Result<Option<String>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => {
                let s = Self::string_value(key, v, NAME_MAX)?;
                if !valid_name(&s) {
                    return Err(fault::invalid_attr(
                        key,
                        format!("'{}' is not a valid string", shown(&s)),
                    ));
                }
                Ok(Some(s))
            }
        }
    }

    /// `description`: 255 characters; line breaks and tabs allowed, other
    /// control characters not.
    pub fn description(&mut self) -> Result<Option<String>, Error> {
        match self.take("description") {
            None => Ok(None),
            Some(v) => {
                let s = Self::string_value("description", v, DESCRIPTION_MAX)?;
                if s.chars()
                    .any(|c| is_unprintable(c) && c != '\n' && c != '\t')
                {
                    return Err(fault::invalid_attr(
                        "description",
                        format!("'{}' is not a valid string", shown(&s)),
                    ));
                }
                Ok(Some(s))
            }
        }
    }

    /// Neutron's `convert_to_boolean`: JSON booleans, `"true"`/`"false"`
    /// in any case, and 0/1.
    pub fn boolean(&mut self, key: &str) -> Result<Option<bool>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => to_bool(&v).map(Some).ok_or_else(|| {
                fault::invalid_attr(
                    key,
                    format!("'{}' cannot be converted to boolean", shown_value(&v)),
                )
            }),
        }
    }

    /// An integer (Neutron's `convert_to_int` also takes numeric strings);
    /// `Some(None)` for `null`.
    pub fn int_or_null(&mut self, key: &str) -> Result<Option<Option<i64>>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => to_int(&v).map(|i| Some(Some(i))).ok_or_else(|| {
                fault::invalid_attr(key, format!("'{}' is not an integer", shown_value(&v)))
            }),
        }
    }

    pub fn uuid(&mut self, key: &str) -> Result<Option<String>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => uuid_value(key, &v).map(Some),
        }
    }

    pub fn uuid_or_null(&mut self, key: &str) -> Result<Option<Option<String>>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => uuid_value(key, &v).map(|u| Some(Some(u))),
        }
    }

    pub fn ip_or_null(&mut self, key: &str) -> Result<Option<Option<IpAddr>>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => ip_value(key, &v).map(|ip| Some(Some(ip))),
        }
    }

    /// The owner named in a create body: `project_id` and `tenant_id` must
    /// agree when both are given.
    pub fn project(&mut self) -> Result<Option<String>, Error> {
        let p = self.string("project_id", 255)?;
        let t = self.string("tenant_id", 255)?;
        match (p, t) {
            (Some(p), Some(t)) if p != t => Err(fault::bad_request(
                "'project_id' and 'tenant_id' do not match",
            )),
            (p, t) => Ok(p.or(t)),
        }
    }

    /// `tags` in a create body.
    pub fn tags(&mut self) -> Result<Option<Vec<String>>, Error> {
        match self.take("tags") {
            None => Ok(None),
            Some(v) => validate_tags(&v).map(Some),
        }
    }

    /// Refuses whatever is left: read-only attributes with Neutron's
    /// messages, anything else as unrecognized.
    pub fn finish(self, op: Op, read_only: &[&str]) -> Result<(), Error> {
        let mut unknown: Vec<String> = Vec::new();
        for k in self.obj.keys() {
            if read_only.contains(&k.as_str()) || k == "id" {
                return Err(fault::bad_request(match op {
                    Op::Create => format!("Attribute '{}' not allowed in POST", shown(k)),
                    Op::Update => format!("Cannot update read-only attribute {}", shown(k)),
                }));
            }
            unknown.push(shown(k));
        }
        if !unknown.is_empty() {
            unknown.sort();
            return Err(fault::bad_request(format!(
                "Unrecognized attribute(s) '{}'",
                unknown.join(", ")
            )));
        }
        Ok(())
    }
}

pub fn to_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

pub fn to_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) if !s.is_empty() && s.len() <= 20 => s.parse().ok(),
        _ => None,
    }
}

pub fn uuid_value(key: &str, v: &Value) -> Result<String, Error> {
    match v {
        Value::String(s) if s.len() <= 45 && uuid::Uuid::parse_str(s).is_ok() => Ok(s.clone()),
        other => Err(fault::invalid_attr(
            key,
            format!("'{}' is not a valid UUID", shown_value(other)),
        )),
    }
}

pub fn ip_value(key: &str, v: &Value) -> Result<IpAddr, Error> {
    match v {
        Value::String(s) => addr::parse_ip(s).ok_or_else(|| {
            fault::invalid_attr(key, format!("'{}' is not a valid IP address", shown(s)))
        }),
        other => Err(fault::invalid_attr(
            key,
            format!("'{}' is not a valid IP address", shown_value(other)),
        )),
    }
}

/// A subnet CIDR as Neutron's `validate_subnet` wants it: with a prefix,
/// and (for IPv4) with no host bits set.
pub fn subnet_value(key: &str, v: &Value) -> Result<Cidr, Error> {
    let Value::String(s) = v else {
        return Err(fault::invalid_attr(
            key,
            format!("'{}' is not a valid IP subnet", shown_value(v)),
        ));
    };
    let c = addr::parse_cidr(s).ok_or_else(|| {
        fault::invalid_attr(key, format!("'{}' is not a valid IP subnet", shown(s)))
    })?;
    let norm = addr::normalize(&c);
    if norm != c {
        return Err(fault::invalid_attr(
            key,
            format!(
                "'{}' isn't a recognized IP subnet cidr, '{norm}' is recommended",
                shown(s)
            ),
        ));
    }
    Ok(c)
}

/// A list of tags: strings of 1–255 printable characters without commas
/// (commas separate tags in filters), at most 50, duplicates dropped.
pub fn validate_tags(v: &Value) -> Result<Vec<String>, Error> {
    let Value::Array(items) = v else {
        return Err(fault::invalid_attr("tags", "tags must be a list"));
    };
    if items.len() > TAGS_PER_RESOURCE {
        return Err(fault::invalid_attr(
            "tags",
            format!("at most {TAGS_PER_RESOURCE} tags are allowed"),
        ));
    }
    // Neutron's `validate_list_of_unique_strings`: a tag given twice is
    // refused, not merged. (Counted after the length bound, which keeps
    // this quadratic scan at most 50 × 50.)
    let mut dups: Vec<String> = Vec::new();
    for (i, t) in items.iter().enumerate() {
        if items[..i].contains(t) {
            let d = t.as_str().map_or_else(|| t.to_string(), shown);
            if !dups.contains(&d) {
                dups.push(d);
            }
        }
    }
    if !dups.is_empty() {
        return Err(fault::invalid_attr(
            "tags",
            format!("Duplicate items in the list: '{}'", dups.join(", ")),
        ));
    }
    items.iter().map(validate_tag).collect()
}

pub fn validate_tag(v: &Value) -> Result<String, Error> {
    match v {
        Value::String(s)
            if !s.is_empty()
                && s.chars().count() <= TAG_MAX
                && !s.contains(',')
                && valid_name(s) =>
        {
            Ok(s.clone())
        }
        other => Err(fault::invalid_attr(
            "tags",
            format!("'{}' is not a valid tag", shown_value(other)),
        )),
    }
}

/// A list of strings.
pub fn string_list(key: &str, v: &Value, max_len: usize) -> Result<Vec<String>, Error> {
    let Value::Array(items) = v else {
        return Err(fault::invalid_attr(
            key,
            format!("'{}' is not a list", shown_value(v)),
        ));
    };
    items
        .iter()
        .map(|i| match i {
            Value::String(s) if s.chars().count() <= max_len && valid_name(s) => Ok(s.clone()),
            other => Err(fault::invalid_attr(
                key,
                format!("'{}' is not a valid string", shown_value(other)),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_refuse_control_characters() {
        assert!(valid_name("net 1"));
        assert!(valid_name(""));
        assert!(valid_name("réseau"));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name("a\u{7}"));
        assert!(!valid_name(" lead"));
        assert!(!valid_name("trail "));
        assert!(!valid_name("rtl\u{202e}"));
    }

    #[test]
    fn dns_names() {
        assert!(valid_dns_name("vm-1").is_ok());
        assert!(valid_dns_name("vm1.example.org.").is_ok());
        assert!(valid_dns_name("vm\n1").is_err());
        assert!(valid_dns_name("-vm").is_err());
        assert!(valid_dns_name("a..b").is_err());
        assert!(valid_dns_name(&"a".repeat(64)).is_err());
        assert!(valid_dns_name("host.123").is_err());
        assert!(valid_dns_domain("example.org.").is_ok());
        assert!(valid_dns_domain("example.org").is_err());
    }

    #[test]
    fn bodies_are_strict() {
        let mut b = Body::new(json!({"network": {"name": "n", "bogus": 1}}), "network").unwrap();
        assert_eq!(b.name("name").unwrap().as_deref(), Some("n"));
        let e = b.finish(Op::Create, &[]).unwrap_err();
        assert!(
            e.message.contains("Unrecognized attribute(s) 'bogus'"),
            "{}",
            e.message
        );
        let b = Body::new(json!({"network": {"status": "X"}}), "network").unwrap();
        let e = b.finish(Op::Update, &["status"]).unwrap_err();
        assert_eq!(e.message, "Cannot update read-only attribute status");
        assert!(Body::new(json!({"networks": []}), "network").is_err());
        assert!(Body::new(json!({"network": 1}), "network").is_err());
        let mut b = Body::new(json!({"network": {"admin_state_up": "yes"}}), "network").unwrap();
        assert!(b.boolean("admin_state_up").is_err());
        let mut b = Body::new(
            json!({"port": {"project_id": "a", "tenant_id": "b"}}),
            "port",
        )
        .unwrap();
        assert!(b.project().is_err());
    }

    #[test]
    fn subnets_and_tags() {
        assert!(subnet_value("cidr", &json!("10.0.0.0/24")).is_ok());
        let e = subnet_value("cidr", &json!("10.0.0.5/24")).unwrap_err();
        assert!(e.message.contains("10.0.0.0/24"), "{}", e.message);
        assert!(subnet_value("cidr", &json!("10.0.0.0")).is_err());
        assert_eq!(validate_tags(&json!(["a", "b"])).unwrap(), ["a", "b"]);
        let e = validate_tags(&json!(["a", "b", "a", "a"])).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid input for tags. Reason: Duplicate items in the list: 'a'."
        );
        assert!(validate_tags(&json!(["a,b"])).is_err());
        assert!(validate_tags(&json!(["a\nb"])).is_err());
        assert!(validate_tags(&json!("a")).is_err());
    }
}
