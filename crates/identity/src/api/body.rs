//! Reading Keystone request bodies field by field, so that every bad value
//! gets a 400 whose message names the field and what was wrong.

use serde_json::{Map, Value};

use api::Error;

/// The object under a body's top-level key (`{"project": {...}}`).
pub struct Body {
    obj: Map<String, Value>,
    entity: &'static str,
}

/// Characters Keystone names may not contain: control characters break
/// logs, DHCP options and terminals downstream.
fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

impl Body {
    /// Takes `{"<entity>": {...}}` apart.
    pub fn new(v: Value, entity: &'static str) -> Result<Body, Error> {
        let Value::Object(mut top) = v else {
            return Err(Error::bad_request(
                "The request body must be a JSON object.",
            ));
        };
        let found = top.remove(entity);
        // Keystone's request schemas close the top level: only the entity's
        // own key may be there.
        if let Some(k) = top.keys().next() {
            return Err(Error::bad_request(format!(
                "Invalid input: additional properties are not allowed ('{k}' was unexpected); the body holds only '{entity}'."
            )));
        }
        match found {
            Some(Value::Object(obj)) => Ok(Body { obj, entity }),
            Some(_) => Err(Error::bad_request(format!(
                "Invalid input for field '{entity}': expected an object."
            ))),
            None => Err(Error::bad_request(format!(
                "Expecting to find '{entity}' in the request body."
            ))),
        }
    }

    fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.entity)
    }

    /// How many attributes are left to read.
    pub fn len(&self) -> usize {
        self.obj.len()
    }

    /// Whether no attribute is left to read.
    pub fn is_empty(&self) -> bool {
        self.obj.is_empty()
    }

    /// Whether the body has the key (even if null).
    pub fn has(&self, key: &str) -> bool {
        self.obj.contains_key(key)
    }

    /// A string field; `null` reads as absent.
    pub fn str(&mut self, key: &str, max: usize) -> Result<Option<String>, Error> {
        match self.obj.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                if s.chars().count() > max {
                    return Err(Error::bad_request(format!(
                        "Invalid input for field '{}': longer than {max} characters.",
                        self.field(key)
                    )));
                }
                Ok(Some(s))
            }
            Some(other) => Err(Error::bad_request(format!(
                "Invalid input for field '{}': {} is not a string.",
                self.field(key),
                kind(&other)
            ))),
        }
    }

    /// A name: non-empty, not only white space, no control characters.
    pub fn name(&mut self, key: &str, max: usize) -> Result<Option<String>, Error> {
        let v = self.str(key, max)?;
        if let Some(s) = &v {
            if s.trim().is_empty() {
                return Err(Error::bad_request(format!(
                    "Invalid input for field '{}': must not be empty.",
                    self.field(key)
                )));
            }
            if has_control(s) {
                return Err(Error::bad_request(format!(
                    "Invalid input for field '{}': control characters are not allowed.",
                    self.field(key)
                )));
            }
        }
        Ok(v)
    }

    /// A required name.
    pub fn required_name(&mut self, key: &str, max: usize) -> Result<String, Error> {
        self.name(key, max)?.ok_or_else(|| {
            Error::bad_request(format!(
                "Invalid input for field '{}': it is required.",
                self.field(key)
            ))
        })
    }

    /// An id reference: 1–64 characters of letters, digits, '-' and '_'.
    pub fn id(&mut self, key: &str) -> Result<Option<String>, Error> {
        let v = self.str(key, 64)?;
        if let Some(s) = &v {
            if s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::bad_request(format!(
                    "Invalid input for field '{}': {s:?} is not a valid id.",
                    self.field(key)
                )));
            }
        }
        Ok(v)
    }

    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, Error> {
        match self.obj.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(Error::bad_request(format!(
                "Invalid input for field '{}': {} is not a boolean.",
                self.field(key),
                kind(&other)
            ))),
        }
    }

    /// Tags: at most 80, each 1–255 characters without ',' or '/'.
    pub fn tags(&mut self) -> Result<Option<Vec<String>>, Error> {
        match self.obj.remove("tags") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => validate_tags(items).map(Some),
            Some(other) => Err(Error::bad_request(format!(
                "Invalid input for field '{}': {} is not an array.",
                self.field("tags"),
                kind(&other)
            ))),
        }
    }

    /// An object field.
    pub fn object(&mut self, key: &str) -> Result<Option<Map<String, Value>>, Error> {
        match self.obj.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(other) => Err(Error::bad_request(format!(
                "Invalid input for field '{}': {} is not an object.",
                self.field(key),
                kind(&other)
            ))),
        }
    }

    /// Removes a field without reading it.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.obj.remove(key)
    }

    /// `id` in an update body: Keystone accepts the entity's own id (clients
    /// send back what they read) and refuses any other.
    pub fn matching_id(&mut self, id: &str) -> Result<(), Error> {
        match self.obj.remove("id") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(s)) if s == id => Ok(()),
            Some(_) => Err(Error::bad_request("Cannot change ID")),
        }
    }

    /// Rejects fields that may not be set by the client.
    pub fn forbid(&self, keys: &[&str]) -> Result<(), Error> {
        for k in keys {
            if self.obj.contains_key(*k) {
                return Err(Error::bad_request(format!(
                    "Invalid input for field '{}': it cannot be set.",
                    self.field(k)
                )));
            }
        }
        Ok(())
    }

    /// What is left: Keystone stores unknown attributes as "extra" and
    /// returns them. `links` is never stored.
    pub fn extra(mut self) -> Map<String, Value> {
        self.obj.remove("links");
        self.obj
    }

    /// What is left, merged over a stored `extra` document (an update):
    /// the new values win, the old ones stay.
    pub fn merge_extra(self, stored: &str) -> String {
        let mut extra: Map<String, Value> = serde_json::from_str(stored).unwrap_or_default();
        extra.extend(self.extra());
        Value::Object(extra).to_string()
    }

    /// Fails if anything is left (for bodies Keystone validates strictly).
    pub fn deny_rest(self) -> Result<(), Error> {
        if let Some(k) = self.obj.keys().next() {
            return Err(Error::bad_request(format!(
                "Invalid input for field '{}': additional properties are not allowed ('{k}' was unexpected).",
                self.entity
            )));
        }
        Ok(())
    }
}

/// Validates a tag list.
pub fn validate_tags(items: Vec<Value>) -> Result<Vec<String>, Error> {
    if items.len() > 80 {
        return Err(Error::bad_request(
            "Invalid input for field 'tags': at most 80 tags are allowed.",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for t in items {
        let Value::String(s) = t else {
            return Err(Error::bad_request(
                "Invalid input for field 'tags': every tag must be a string.",
            ));
        };
        validate_tag(&s)?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// One tag: 1–255 characters, no ',' or '/', no control characters.
pub fn validate_tag(s: &str) -> Result<(), Error> {
    if s.is_empty()
        || s.chars().count() > 255
        || s.contains(',')
        || s.contains('/')
        || has_control(s)
    {
        return Err(Error::bad_request(format!(
            "Invalid tag {s:?}: tags are 1 to 255 characters without ',', '/' or control characters."
        )));
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
