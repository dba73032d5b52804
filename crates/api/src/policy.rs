//! Policy: which caller may do what, in oslo.policy's rule language.
//!
//! Each service lists its rules in one place (`<service>/src/policy.rs`) as
//! `(name, rule)` pairs written exactly as OpenStack's defaults are written,
//! e.g. `"identity:get_user" => "rule:admin_required or user_id:%(target.user.id)s"`,
//! so an operator can read them against upstream and override any of them.
//!
//! Supported syntax: `role:NAME`, `rule:NAME`, `ATTR:VALUE` where VALUE is a
//! literal, `'quoted literal'`, `True`/`False`, or `%(target.path)s` taken
//! from the target; `@` (always), `!` (never), the empty rule (always);
//! `and`, `or`, `not`, parentheses. Credential attributes: `user_id`,
//! `user_domain_id`, `project_id`, `project_domain_id`, `domain_id`,
//! `system_scope` (`all` when system-scoped), `token.is_app_cred`, and
//! `is_admin`: true when the service's `context_is_admin` rule holds for
//! the caller, as oslo.context sets it (Nova, Neutron, Glance); in a
//! service without that rule (identity) it is false: Keystone sets it only
//! for the bootstrap `admin_token` shared secret, never for a user's token
//! (`AuthContextMiddleware.fill_context`), and Ferrostack has no
//! `admin_token`, so Keystone's `role:admin or is_admin:1` means just the
//! `admin` role and an operator's override of it is not widened back to
//! every admin holder. Boolean credentials match
//! `True`/`true`/`1` and `False`/`false`/`0`, so Keystone's `is_admin:1`
//! means what it says.
//!
//! Operators override rules with a policy file ([`parse_file`],
//! [`Enforcer::apply_overrides`]): oslo.policy's format, a YAML (or JSON)
//! map of rule name to rule text; rules it does not name keep their
//! defaults.
//!
//! Neutron's field checks are understood too: `field:RESOURCE:ATTR=VALUE`
//! holds when the target's `ATTR` equals `VALUE` (booleans are written
//! `True`/`False` in targets), and `field:RESOURCE:ATTR=~^PREFIX` when it
//! starts with `PREFIX` — the only regular expression upstream's defaults
//! use; any other pattern is refused when the rule is parsed.

use std::collections::HashMap;

use crate::{AuthContext, Error, Scope};

/// A parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    Always,
    Never,
    Role(String),
    Rule(String),
    /// `attr:value`: the credential attribute must equal the value.
    Match {
        attr: String,
        value: Value,
    },
    /// Neutron's `field:RESOURCE:ATTR=VALUE`: the target's `attr` compared
    /// with a literal (or, with `prefix`, starting with it).
    Field {
        attr: String,
        value: String,
        prefix: bool,
    },
    /// `'literal':value` (oslo.policy's generic check with a quoted
    /// literal on the left, e.g. `"public":%(visibility)s`): the value,
    /// usually taken from the target, must equal the literal.
    Literal {
        literal: String,
        value: Value,
    },
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Literal(String),
    /// `%(path)s`: looked up in the target.
    Target(String),
}

/// Values a rule can compare against: `target.user.domain_id` and the like.
#[derive(Debug, Default, Clone)]
pub struct Target(Vec<(String, String)>);

impl Target {
    pub fn new() -> Self {
        Target(Vec::new())
    }
    /// Adds a value; a missing value never matches anything.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.push((key.to_string(), value.into()));
        self
    }
    /// Adds a value when present.
    pub fn with_opt(self, key: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A rule that failed to parse; names the rule and what was wrong.
#[derive(Debug, thiserror::Error)]
#[error("policy rule {name:?}: {message}")]
pub struct ParseError {
    pub name: String,
    pub message: String,
}

/// A policy file that cannot be used: not a map of rule names to rule
/// texts, or a rule in it that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not a map of rule names to rules: {0}")]
    Syntax(String),
    #[error(transparent)]
    Rule(#[from] ParseError),
}

/// Reads a policy file in oslo.policy's format: a YAML map of rule name to
/// rule text (JSON, being YAML, works too). Rules come back in the file's
/// order; an empty file has none. Each text is parsed here, so a bad one
/// is reported with its name before anything is applied.
pub fn parse_file(text: &str) -> Result<Vec<(String, String)>, FileError> {
    let doc: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| FileError::Syntax(e.to_string()))?;
    let map = match doc {
        serde_norway::Value::Null => return Ok(Vec::new()),
        serde_norway::Value::Mapping(m) => m,
        _ => return Err(FileError::Syntax("the document is not a map".into())),
    };
    let mut rules = Vec::with_capacity(map.len());
    for (key, value) in map {
        let serde_norway::Value::String(name) = key else {
            return Err(FileError::Syntax(format!(
                "rule names are strings, not {key:?}"
            )));
        };
        let serde_norway::Value::String(text) = value else {
            return Err(ParseError {
                name,
                message: "the rule must be a string (quote it)".into(),
            }
            .into());
        };
        parse(&text).map_err(|message| ParseError {
            name: name.clone(),
            message,
        })?;
        rules.push((name, text));
    }
    Ok(rules)
}

/// The rules of one service, checked against request contexts.
#[derive(Debug, Clone, Default)]
pub struct Enforcer {
    rules: HashMap<String, Rule>,
}

impl Enforcer {
    /// Builds an enforcer from `(name, rule text)` pairs. Panics never: a
    /// default that does not parse is a bug caught by the service's tests, so
    /// it is reported as an error.
    pub fn new(defaults: &[(&str, &str)]) -> Result<Self, ParseError> {
        let mut e = Enforcer::default();
        for (name, text) in defaults {
            e.set(name, text)?;
        }
        Ok(e)
    }

    /// Sets (or overrides) one rule.
    pub fn set(&mut self, name: &str, text: &str) -> Result<(), ParseError> {
        let rule = parse(text).map_err(|message| ParseError {
            name: name.to_string(),
            message,
        })?;
        self.rules.insert(name.to_string(), rule);
        Ok(())
    }

    /// Applies an operator's rules over the defaults (oslo.policy's
    /// overrides: a named rule replaces the default, the others stay),
    /// then [`validate`](Self::validate)s the result. Returns the names
    /// the service does not define, which oslo.policy only warns about:
    /// they may be helpers that other overridden rules refer to, or typos.
    pub fn apply_overrides(
        &mut self,
        rules: &[(String, String)],
    ) -> Result<Vec<String>, ParseError> {
        let mut unknown = Vec::new();
        for (name, text) in rules {
            if !self.rules.contains_key(name) {
                unknown.push(name.clone());
            }
            self.set(name, text)?;
        }
        self.validate()?;
        Ok(unknown)
    }

    /// Checks what oslo.policy's `check_rules` checks: every `rule:NAME`
    /// names a defined rule, and no rule refers back to itself through
    /// others. An undefined reference would silently deny, a cycle would
    /// deny at the depth limit; both are mistakes worth stopping a start.
    pub fn validate(&self) -> Result<(), ParseError> {
        let mut names: Vec<&str> = self.rules.keys().map(String::as_str).collect();
        names.sort_unstable();
        for name in &names {
            let mut refs = Vec::new();
            references(&self.rules[*name], &mut refs);
            if let Some(missing) = refs.iter().find(|r| !self.rules.contains_key(**r)) {
                return Err(ParseError {
                    name: name.to_string(),
                    message: format!("refers to rule:{missing}, which is not defined"),
                });
            }
        }
        if self.asks_for_is_admin("context_is_admin", &mut Vec::new()) {
            return Err(ParseError {
                name: "context_is_admin".into(),
                message: "decides is_admin, so it cannot check is_admin itself".into(),
            });
        }
        // Depth-first search; `open` holds the rules on the current path.
        let mut done = std::collections::HashSet::new();
        for name in &names {
            let mut open = Vec::new();
            if let Some(cycle) = self.find_cycle(name, &mut open, &mut done) {
                return Err(ParseError {
                    name: name.to_string(),
                    message: format!("refers to itself: {}", cycle.join(" -> ")),
                });
            }
        }
        Ok(())
    }

    /// Whether the named rule checks `is_admin`, itself or through the
    /// rules it refers to.
    fn asks_for_is_admin<'a>(&'a self, name: &'a str, seen: &mut Vec<&'a str>) -> bool {
        if seen.contains(&name) {
            return false;
        }
        seen.push(name);
        let Some(rule) = self.rules.get(name) else {
            return false;
        };
        fn walk<'a>(e: &'a Enforcer, r: &'a Rule, seen: &mut Vec<&'a str>) -> bool {
            match r {
                Rule::Match { attr, .. } => attr == "is_admin",
                Rule::Rule(n) => e.asks_for_is_admin(n, seen),
                Rule::And(rs) | Rule::Or(rs) => rs.iter().any(|r| walk(e, r, seen)),
                Rule::Not(r) => walk(e, r, seen),
                _ => false,
            }
        }
        walk(self, rule, seen)
    }

    fn find_cycle<'a>(
        &'a self,
        name: &'a str,
        open: &mut Vec<&'a str>,
        done: &mut std::collections::HashSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = open.iter().position(|n| *n == name) {
            let mut cycle = open[at..].to_vec();
            cycle.push(name);
            return Some(cycle);
        }
        if done.contains(name) {
            return None;
        }
        let (key, rule) = self.rules.get_key_value(name)?;
        open.push(key);
        let mut refs = Vec::new();
        references(rule, &mut refs);
        for r in refs {
            if let Some(cycle) = self.find_cycle(r, open, done) {
                return Some(cycle);
            }
        }
        open.pop();
        done.insert(key);
        None
    }

    /// Whether `ctx` may perform `action` on `target`. An unknown action is
    /// denied: forgetting to write a rule must not open an API.
    pub fn check(&self, action: &str, ctx: &AuthContext, target: &Target) -> bool {
        match self.rules.get(action) {
            Some(rule) => self.eval(rule, ctx, target, 0),
            None => false,
        }
    }

    /// Like [`check`](Self::check) but answers with OpenStack's 403.
    pub fn enforce(&self, action: &str, ctx: &AuthContext, target: &Target) -> Result<(), Error> {
        if self.check(action, ctx, target) {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "You are not authorized to perform the requested action: {action}."
            )))
        }
    }

    /// Whether a rule of that name exists (services check attribute-level
    /// rules such as `create_network:shared` only where one is written).
    pub fn has(&self, action: &str) -> bool {
        self.rules.contains_key(action)
    }

    /// The names of all rules, for tests that check every route has one.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.keys().map(String::as_str)
    }

    fn eval(&self, rule: &Rule, ctx: &AuthContext, target: &Target, depth: u32) -> bool {
        // Rules referring to each other in a cycle would recurse forever.
        if depth > 32 {
            return false;
        }
        match rule {
            Rule::Always => true,
            Rule::Never => false,
            Rule::Role(r) => ctx.has_role(r),
            Rule::Rule(name) => self
                .rules
                .get(name)
                .is_some_and(|r| self.eval(r, ctx, target, depth + 1)),
            Rule::Match { attr, value } => {
                let want = match value {
                    Value::Literal(l) => Some(l.as_str()),
                    Value::Target(path) => target.get(path),
                };
                if let Some(flag) = self.flag(attr, ctx, depth) {
                    return want.and_then(parse_bool) == Some(flag);
                }
                let Some(have) = credential(ctx, attr) else {
                    return false;
                };
                want.is_some_and(|w| w == have)
            }
            Rule::Field {
                attr,
                value,
                prefix,
            } => target.get(attr).is_some_and(|have| {
                if *prefix {
                    have.starts_with(value.as_str())
                } else {
                    have == value
                }
            }),
            Rule::Literal { literal, value } => {
                let have = match value {
                    Value::Literal(l) => Some(l.as_str()),
                    Value::Target(path) => target.get(path),
                };
                have == Some(literal.as_str())
            }
            Rule::And(rs) => rs.iter().all(|r| self.eval(r, ctx, target, depth + 1)),
            Rule::Or(rs) => rs.iter().any(|r| self.eval(r, ctx, target, depth + 1)),
            Rule::Not(r) => !self.eval(r, ctx, target, depth + 1),
        }
    }
}

impl Enforcer {
    /// The boolean credentials: `is_admin` and `token.is_app_cred`.
    fn flag(&self, attr: &str, ctx: &AuthContext, depth: u32) -> Option<bool> {
        match attr {
            // oslo.context sets `is_admin` from the `context_is_admin` rule
            // (Nova, Neutron, Glance). Keystone has no such rule and sets it
            // only for its `admin_token` shared secret, which Ferrostack does
            // not have: false. A `context_is_admin` that itself asks for
            // `is_admin` ends at the depth limit, false.
            "is_admin" => Some(match self.rules.get("context_is_admin") {
                Some(rule) => self.eval(rule, ctx, &Target::new(), depth + 1),
                None => false,
            }),
            "token.is_app_cred" => Some(ctx.application_credential.is_some()),
            _ => None,
        }
    }
}

/// The names a rule refers to with `rule:NAME`.
fn references<'a>(rule: &'a Rule, out: &mut Vec<&'a str>) {
    match rule {
        Rule::Rule(name) => out.push(name),
        Rule::And(rs) | Rule::Or(rs) => rs.iter().for_each(|r| references(r, out)),
        Rule::Not(r) => references(r, out),
        _ => {}
    }
}

/// A boolean as oslo.policy's checks write it (`True`, or `1` as Python's
/// `True == 1`).
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "True" | "true" | "1" => Some(true),
        "False" | "false" | "0" => Some(false),
        _ => None,
    }
}

fn credential<'a>(ctx: &'a AuthContext, attr: &str) -> Option<&'a str> {
    match attr {
        "user_id" => Some(&ctx.user_id),
        "user_domain_id" => Some(&ctx.user_domain_id),
        "project_id" => ctx.project_id(),
        "project_domain_id" => match &ctx.scope {
            Scope::Project { domain_id, .. } => Some(domain_id),
            _ => None,
        },
        "domain_id" => ctx.domain_id(),
        "system_scope" => ctx.is_system().then_some("all"),
        _ => None,
    }
}

/// Parses one rule text.
pub fn parse(text: &str) -> Result<Rule, String> {
    let tokens = tokenize(text);
    if tokens.is_empty() {
        return Ok(Rule::Always);
    }
    let mut p = Parser { tokens, pos: 0 };
    let rule = p.or()?;
    if p.pos != p.tokens.len() {
        return Err(format!("unexpected {:?}", p.tokens[p.pos]));
    }
    Ok(rule)
}

fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let mut w = word;
        while let Some(rest) = w.strip_prefix('(') {
            out.push("(".to_string());
            w = rest;
        }
        // A trailing ')' closes a group unless it belongs to `%(...)s`, which
        // always ends in 's'.
        let mut closes = 0;
        while let Some(rest) = w.strip_suffix(')') {
            closes += 1;
            w = rest;
        }
        if !w.is_empty() {
            out.push(w.to_string());
        }
        out.extend(std::iter::repeat_n(")".to_string(), closes));
    }
    out
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }
    fn or(&mut self) -> Result<Rule, String> {
        let mut items = vec![self.and()?];
        while self.peek().is_some_and(|t| t.eq_ignore_ascii_case("or")) {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Rule::Never)
        } else {
            Rule::Or(items)
        })
    }
    fn and(&mut self) -> Result<Rule, String> {
        let mut items = vec![self.not()?];
        while self.peek().is_some_and(|t| t.eq_ignore_ascii_case("and")) {
            self.pos += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Rule::Never)
        } else {
            Rule::And(items)
        })
    }
    fn not(&mut self) -> Result<Rule, String> {
        if self.peek().is_some_and(|t| t.eq_ignore_ascii_case("not")) {
            self.pos += 1;
            return Ok(Rule::Not(Box::new(self.not()?)));
        }
        self.atom()
    }
    fn atom(&mut self) -> Result<Rule, String> {
        let Some(tok) = self.peek().map(str::to_owned) else {
            return Err("rule ends too early".into());
        };
        self.pos += 1;
        if tok == "(" {
            let inner = self.or()?;
            if self.peek() != Some(")") {
                return Err("missing ')'".into());
            }
            self.pos += 1;
            return Ok(inner);
        }
        check(&tok)
    }
}

fn check(tok: &str) -> Result<Rule, String> {
    match tok {
        "@" => return Ok(Rule::Always),
        "!" => return Ok(Rule::Never),
        ")" => return Err("unexpected ')'".into()),
        _ => {}
    }
    let Some((kind, value)) = tok.split_once(':') else {
        return Err(format!("{tok:?} is not a check (expected kind:value)"));
    };
    let quoted = |k: &str| {
        (k.len() >= 2 && k.starts_with('"') && k.ends_with('"'))
            || (k.len() >= 2 && k.starts_with('\'') && k.ends_with('\''))
    };
    if quoted(kind) {
        let value = match value.strip_prefix("%(").and_then(|v| v.strip_suffix(")s")) {
            Some(path) => Value::Target(path.to_string()),
            None => Value::Literal(value.trim_matches('\'').trim_matches('"').to_string()),
        };
        return Ok(Rule::Literal {
            literal: kind[1..kind.len() - 1].to_string(),
            value,
        });
    }
    match kind {
        "field" => field_check(value),
        "role" => Ok(Rule::Role(value.to_string())),
        "rule" => Ok(Rule::Rule(value.to_string())),
        attr => {
            let value =
                if let Some(path) = value.strip_prefix("%(").and_then(|v| v.strip_suffix(")s")) {
                    Value::Target(path.to_string())
                } else {
                    let v = value.trim_matches('\'').trim_matches('"');
                    Value::Literal(v.to_string())
                };
            Ok(Rule::Match {
                attr: attr.to_string(),
                value,
            })
        }
    }
}

/// `RESOURCE:ATTR=VALUE` or `RESOURCE:ATTR=~^PREFIX` (the attribute may
/// itself contain ':', as `router:external` does).
fn field_check(spec: &str) -> Result<Rule, String> {
    let bad = || format!("field check {spec:?} is not RESOURCE:ATTR=VALUE");
    let (_resource, rest) = spec.split_once(':').ok_or_else(bad)?;
    let (attr, value) = rest.split_once('=').ok_or_else(bad)?;
    if attr.is_empty() {
        return Err(bad());
    }
    if let Some(pattern) = value.strip_prefix('~') {
        let lit = pattern
            .strip_prefix('^')
            .filter(|l| !l.chars().any(|c| "\\.^$|?*+()[]{}".contains(c)))
            .ok_or_else(|| {
                format!("field check {spec:?}: only ^literal prefixes are supported as patterns")
            })?;
        return Ok(Rule::Field {
            attr: attr.to_string(),
            value: lit.to_string(),
            prefix: true,
        });
    }
    Ok(Rule::Field {
        attr: attr.to_string(),
        value: value.trim_matches('\'').to_string(),
        prefix: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoleRef;

    fn ctx(roles: &[&str], scope: Scope) -> AuthContext {
        AuthContext {
            user_id: "u1".into(),
            user_name: "alice".into(),
            user_domain_id: "default".into(),
            user_domain_name: "Default".into(),
            scope,
            roles: roles
                .iter()
                .map(|r| RoleRef {
                    id: format!("id-{r}"),
                    name: r.to_string(),
                })
                .collect(),
            methods: vec!["password"],
            audit_ids: vec![],
            issued_at: 0,
            expires_at: 0,
            application_credential: None,
        }
    }

    fn project(id: &str) -> Scope {
        Scope::Project {
            id: id.into(),
            name: "demo".into(),
            domain_id: "default".into(),
            domain_name: "Default".into(),
        }
    }

    #[test]
    fn parses_upstream_style_rules() {
        let e = Enforcer::new(&[
            ("admin_required", "role:admin or is_admin:1"),
            ("owner", "user_id:%(target.user.id)s"),
            (
                "get_user",
                "rule:admin_required or (role:reader and system_scope:all) or (role:reader and domain_id:%(target.user.domain_id)s) or rule:owner",
            ),
            ("open", ""),
            ("closed", "!"),
            ("not_app_cred", "not token.is_app_cred:True"),
        ])
        .unwrap();
        let member = ctx(&["member", "reader"], project("p1"));
        let admin = ctx(&["admin"], project("p0"));
        let sysreader = ctx(&["reader"], Scope::System);
        let other = Target::new()
            .with("target.user.id", "u2")
            .with("target.user.domain_id", "default");
        let own = Target::new().with("target.user.id", "u1");
        assert!(!e.check("get_user", &member, &other));
        assert!(e.check("get_user", &member, &own));
        assert!(e.check("get_user", &admin, &other));
        assert!(e.check("get_user", &sysreader, &other));
        let domreader = ctx(
            &["reader"],
            Scope::Domain {
                id: "default".into(),
                name: "Default".into(),
            },
        );
        assert!(e.check("get_user", &domreader, &other));
        assert!(e.check("open", &member, &Target::new()));
        assert!(!e.check("closed", &admin, &Target::new()));
        assert!(!e.check("no_such_rule", &admin, &Target::new()));
        assert!(e.check("not_app_cred", &member, &Target::new()));
        let mut appcred = member.clone();
        appcred.application_credential = Some(("a".into(), "n".into(), false));
        assert!(!e.check("not_app_cred", &appcred, &Target::new()));
        assert_eq!(
            e.enforce("get_user", &member, &other).unwrap_err().message,
            "You are not authorized to perform the requested action: get_user."
        );
    }

    #[test]
    fn neutron_field_checks() {
        let e = Enforcer::new(&[
            ("shared", "field:networks:shared=True"),
            ("external", "field:networks:router:external=True"),
            ("network_device", "field:port:device_owner=~^network:"),
            (
                "owner_or_shared",
                "project_id:%(project_id)s or rule:shared",
            ),
            ("plain_owner", "not rule:network_device"),
        ])
        .unwrap();
        let m = ctx(&["member"], project("p1"));
        let shared = Target::new()
            .with("project_id", "p2")
            .with("shared", "True")
            .with("router:external", "False");
        assert!(e.check("owner_or_shared", &m, &shared));
        assert!(!e.check("external", &m, &shared));
        let private = Target::new()
            .with("project_id", "p2")
            .with("shared", "False");
        assert!(!e.check("owner_or_shared", &m, &private));
        let dev = |o: &str| Target::new().with("device_owner", o);
        assert!(e.check("network_device", &m, &dev("network:dhcp")));
        assert!(!e.check("network_device", &m, &dev("compute:nova")));
        assert!(e.check("plain_owner", &m, &dev("")));
        assert!(e.has("shared") && !e.has("nope"));
        assert!(parse("field:port:device_owner=~network.*").is_err());
        assert!(parse("field:nothing").is_err());
    }

    #[test]
    fn quoted_literals_compare_with_target_values() {
        let e = Enforcer::new(&[(
            "get",
            "role:reader and (project_id:%(project_id)s or \"public\":%(visibility)s)",
        )])
        .unwrap();
        let member = ctx(&["reader"], project("p1"));
        let public = Target::new()
            .with("project_id", "p2")
            .with("visibility", "public");
        let private = Target::new()
            .with("project_id", "p2")
            .with("visibility", "private");
        assert!(e.check("get", &member, &public));
        assert!(!e.check("get", &member, &private));
        assert!(!e.check("get", &member, &Target::new()));
    }

    #[test]
    fn rejects_malformed_rules() {
        assert!(parse("role:admin or").is_err());
        assert!(parse("(role:admin").is_err());
        assert!(parse("admin").is_err());
        assert!(parse("role:a and (role:b or role:c))").is_err());
    }

    #[test]
    fn is_admin_follows_context_is_admin_and_is_false_without_it() {
        let admin = ctx(&["admin"], project("p0"));
        let member = ctx(&["member", "reader"], project("p1"));
        // Keystone: no `context_is_admin`, and `is_admin` is only the
        // `admin_token` shared secret's, which Ferrostack does not have. An
        // operator who moves the admin role to `cloud_admin` does not let
        // every `admin` holder back in through `is_admin:1`.
        let keystone = Enforcer::new(&[
            ("admin_required", "role:cloud_admin or is_admin:1"),
            ("default_admin_required", "role:admin or is_admin:1"),
        ])
        .unwrap();
        let cloud_admin = ctx(&["cloud_admin"], project("p0"));
        assert!(!keystone.check("admin_required", &admin, &Target::new()));
        assert!(keystone.check("admin_required", &cloud_admin, &Target::new()));
        assert!(keystone.check("default_admin_required", &admin, &Target::new()));
        assert!(!keystone.check("default_admin_required", &member, &Target::new()));
        // Spelled as oslo.policy spells booleans, either way round (here
        // where `context_is_admin` is the admin role).
        let spelled = Enforcer::new(&[
            ("context_is_admin", "role:admin"),
            ("a", "is_admin:True"),
            ("b", "is_admin:true"),
            ("not_admin", "is_admin:0"),
            ("also_not", "is_admin:False"),
            ("nonsense", "is_admin:yes"),
        ])
        .unwrap();
        for r in ["a", "b"] {
            assert!(spelled.check(r, &admin, &Target::new()), "{r}");
            assert!(!spelled.check(r, &member, &Target::new()), "{r}");
        }
        for r in ["not_admin", "also_not"] {
            assert!(!spelled.check(r, &admin, &Target::new()), "{r}");
            assert!(spelled.check(r, &member, &Target::new()), "{r}");
        }
        assert!(!spelled.check("nonsense", &admin, &Target::new()));
        // Where a service defines `context_is_admin`, that rule decides
        // (oslo.context's `is_admin`), so an operator who makes another
        // role the admin role moves `is_admin` with it.
        let neutron = Enforcer::new(&[
            ("context_is_admin", "role:cloud_admin"),
            ("admin_only", "is_admin:1"),
        ])
        .unwrap();
        assert!(neutron.check("admin_only", &cloud_admin, &Target::new()));
        assert!(!neutron.check("admin_only", &admin, &Target::new()));
        // A `context_is_admin` that asks for `is_admin` is false, not a
        // hang, and refused when a policy is validated.
        let cyclic = Enforcer::new(&[
            ("context_is_admin", "rule:admin_role"),
            ("admin_role", "role:admin and is_admin:1"),
        ])
        .unwrap();
        assert!(!cyclic.check("context_is_admin", &admin, &Target::new()));
        let err = cyclic.validate().unwrap_err();
        assert_eq!(err.name, "context_is_admin", "{err}");
    }

    #[test]
    fn policy_files_in_yaml_and_json() {
        let yaml = "# operator overrides\n\"identity:list_users\": \"role:reader\"\nopen: ''\n\"get\": \"rule:admin_required or user_id:%(target.user.id)s\"\n";
        assert_eq!(
            parse_file(yaml).unwrap(),
            vec![
                ("identity:list_users".to_string(), "role:reader".to_string()),
                ("open".to_string(), String::new()),
                (
                    "get".to_string(),
                    "rule:admin_required or user_id:%(target.user.id)s".to_string()
                ),
            ]
        );
        let json = r#"{"create_network": "rule:admin_only", "get_network": ""}"#;
        assert_eq!(parse_file(json).unwrap().len(), 2);
        assert!(parse_file("").unwrap().is_empty());
        assert!(parse_file("# nothing overridden\n").unwrap().is_empty());
        let named = |text: &str| match parse_file(text) {
            Err(FileError::Rule(e)) => e.name,
            other => panic!("{text:?}: {other:?}"),
        };
        assert_eq!(named("good: ''\nbad_rule: 'role:admin or'\n"), "bad_rule");
        assert_eq!(named("count: 3\n"), "count");
        assert_eq!(named("missing:\n"), "missing");
        let err = parse_file("bad_rule: '(role:admin'\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"bad_rule\"") && err.contains("missing ')'"),
            "{err}"
        );
        assert!(matches!(
            parse_file("- a\n- b\n"),
            Err(FileError::Syntax(_))
        ));
        assert!(matches!(parse_file("a: 'x\n"), Err(FileError::Syntax(_))));
        assert!(matches!(
            parse_file("a: ''\na: ''\n"),
            Err(FileError::Syntax(_))
        ));
    }

    #[test]
    fn overrides_replace_named_rules_and_keep_the_rest() {
        let defaults = [
            ("admin_only", "role:admin"),
            ("owner", "project_id:%(project_id)s"),
            ("create", "rule:admin_only or rule:owner"),
            ("delete", "rule:admin_only or rule:owner"),
        ];
        let member = ctx(&["member"], project("p1"));
        let own = Target::new().with("project_id", "p1");
        let mut e = Enforcer::new(&defaults).unwrap();
        let unknown = e
            .apply_overrides(&[
                ("create".into(), "rule:admin_only".into()),
                ("is_auditor".into(), "role:auditor".into()),
            ])
            .unwrap();
        assert_eq!(unknown, vec!["is_auditor".to_string()]);
        assert!(!e.check("create", &member, &own));
        assert!(e.check("delete", &member, &own));

        let mut e = Enforcer::new(&defaults).unwrap();
        let err = e
            .apply_overrides(&[("delete".into(), "rule:admin_only or rule:ownr".into())])
            .unwrap_err();
        assert_eq!(err.name, "delete");
        assert!(err.to_string().contains("rule:ownr"), "{err}");

        let mut e = Enforcer::new(&defaults).unwrap();
        let err = e
            .apply_overrides(&[
                ("owner".into(), "rule:create".into()),
                ("admin_only".into(), "role:admin".into()),
            ])
            .unwrap_err();
        assert!(err.message.contains("refers to itself"), "{err}");
        assert!(
            err.message.contains("create -> owner -> create")
                || err.message.contains("owner -> create -> owner"),
            "{err}"
        );

        let mut e = Enforcer::new(&defaults).unwrap();
        let err = e
            .apply_overrides(&[("create".into(), "role:admin or".into())])
            .unwrap_err();
        assert_eq!(err.name, "create");
    }

    #[test]
    fn missing_target_values_never_match() {
        let e = Enforcer::new(&[("r", "project_id:%(target.project_id)s")]).unwrap();
        assert!(!e.check("r", &ctx(&["member"], project("p1")), &Target::new()));
        assert!(!e.check(
            "r",
            &ctx(&["member"], Scope::Unscoped),
            &Target::new().with("target.project_id", "p1")
        ));
        assert!(e.check(
            "r",
            &ctx(&["member"], project("p1")),
            &Target::new().with("target.project_id", "p1")
        ));
    }
}
