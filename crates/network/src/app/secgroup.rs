//! Security groups and rules: the default group each project gets on first
//! use (with upstream's default rules), rule validation and normalization
//! as Neutron does it, duplicate detection, in-use checks.

use api::{AuthContext, Error, Target};

use super::addr;
use super::view::{rule_target, sg_target, SecurityGroupView};
use super::{db_err, fault, Network, Tx};
use crate::store as db;

/// Protocol names Neutron accepts, with their numbers.
pub const PROTOCOLS: &[(&str, u8)] = &[
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("hopopt", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ip", 0),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];

/// Protocols whose rules may carry a port range (by number).
const PORT_PROTOCOLS: &[u8] = &[33, 132, 6, 17, 136];
/// Protocols only meaningful for IPv6.
const IPV6_ONLY: &[u8] = &[41, 44, 58, 59, 60, 43];

/// The protocol's number, from a stored name or number.
pub fn protocol_number(p: &str) -> Option<u8> {
    PROTOCOLS
        .iter()
        .find(|(n, _)| *n == p)
        .map(|(_, v)| *v)
        .or_else(|| p.parse().ok())
}

/// Neutron's `convert_protocol`: `None`/`any` is any protocol; a name of
/// the table (any case) or a number 0–255 (as a string or an integer).
pub fn convert_protocol(v: &serde_json::Value) -> Result<Option<String>, Error> {
    let bad = |shown: &str| {
        fault::bad(
            "SecurityGroupRuleInvalidProtocol",
            format!(
                "Security group rule protocol {shown} not supported. Only protocol values [None, 'any', {}] and integer representations [0 to 255] are supported.",
                PROTOCOLS
                    .iter()
                    .map(|(n, _)| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(x) if x <= 255 => Ok(Some(x.to_string())),
            _ => Err(bad(&n.to_string())),
        },
        serde_json::Value::String(s) => {
            if s == "any" {
                return Ok(None);
            }
            if !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()) {
                return match s.parse::<u16>() {
                    Ok(x) if x <= 255 => Ok(Some(x.to_string())),
                    _ => Err(bad(s)),
                };
            }
            let lower = s.to_ascii_lowercase();
            if PROTOCOLS.iter().any(|(n, _)| *n == lower) {
                Ok(Some(lower))
            } else {
                Err(bad(&s.chars().take(64).collect::<String>()))
            }
        }
        other => Err(bad(&other.to_string().chars().take(64).collect::<String>())),
    }
}

/// A rule as the API received it, fields already type-checked.
#[derive(Debug, Clone, Default)]
pub struct RuleCreate {
    pub project_id: Option<String>,
    pub security_group_id: String,
    pub direction: String,
    pub ethertype: String,
    pub protocol: Option<String>,
    pub port_range_min: Option<i64>,
    pub port_range_max: Option<i64>,
    pub remote_ip_prefix: Option<netmodel::Cidr>,
    pub remote_group_id: Option<String>,
    pub description: String,
}

/// Validates and normalizes a rule as Neutron's
/// `_validate_base_security_group_rule_attributes` does.
pub fn normalize_rule(r: &mut RuleCreate) -> Result<(), Error> {
    // Legacy IPv6 ICMP names and number 1 under IPv6 mean ipv6-icmp.
    if r.ethertype == "IPv6" {
        match r.protocol.as_deref() {
            Some("icmp") | Some("icmpv6") => r.protocol = Some("ipv6-icmp".into()),
            Some("1") => r.protocol = Some("58".into()),
            _ => {}
        }
    }
    // The whole range is no range.
    if r.port_range_min == Some(1) && r.port_range_max == Some(65535) {
        r.port_range_min = None;
        r.port_range_max = None;
    }
    if r.port_range_min.is_some() || r.port_range_max.is_some() {
        let Some(proto) = r.protocol.as_deref() else {
            return Err(fault::bad(
                "SecurityGroupProtocolRequiredWithPorts",
                "Must also specify protocol if port range is given.",
            ));
        };
        let num = protocol_number(proto).unwrap_or(255);
        if PORT_PROTOCOLS.contains(&num) {
            for p in [r.port_range_min, r.port_range_max].into_iter().flatten() {
                if !(1..=65535).contains(&p) {
                    return Err(fault::bad(
                        "SecurityGroupInvalidPortValue",
                        format!("Invalid value for port {p}"),
                    ));
                }
            }
            match (r.port_range_min, r.port_range_max) {
                (Some(a), Some(b)) if a <= b => {}
                _ => {
                    return Err(fault::bad(
                        "SecurityGroupInvalidPortRange",
                        "For TCP/UDP protocols, port_range_min must be <= port_range_max",
                    ))
                }
            }
        } else if num == 1 || num == 58 {
            for (attr, field, v) in [
                ("port_range_min", "type", r.port_range_min),
                ("port_range_max", "code", r.port_range_max),
            ] {
                if let Some(v) = v {
                    if !(0..=255).contains(&v) {
                        return Err(fault::bad(
                            "SecurityGroupInvalidIcmpValue",
                            format!(
                                "Invalid value for ICMP {field} ({attr}) {v}. It must be 0 to 255."
                            ),
                        ));
                    }
                }
            }
            if r.port_range_min.is_none() {
                if let Some(code) = r.port_range_max {
                    return Err(fault::bad(
                        "SecurityGroupMissingIcmpType",
                        format!(
                            "ICMP code (port-range-max) {code} is provided but ICMP type (port-range-min) is missing."
                        ),
                    ));
                }
            }
        } else {
            return Err(fault::bad(
                "SecurityGroupInvalidProtocolForPort",
                format!(
                    "Ports cannot be specified for protocol {proto}. Ports are only supported for DCCP, SCTP, TCP, UDP, UDPLITE."
                ),
            ));
        }
    }
    if let Some(prefix) = &r.remote_ip_prefix {
        let v6 = prefix.addr.is_ipv6();
        if v6 != (r.ethertype == "IPv6") {
            return Err(fault::bad(
                "SecurityGroupRuleParameterConflict",
                format!(
                    "Conflicting value ethertype {} for CIDR {prefix}",
                    r.ethertype
                ),
            ));
        }
    }
    if let Some(proto) = r.protocol.as_deref() {
        if r.ethertype == "IPv4" && protocol_number(proto).is_some_and(|n| IPV6_ONLY.contains(&n)) {
            return Err(fault::bad(
                "SecurityGroupEthertypeConflictWithProtocol",
                format!("Invalid ethertype IPv4 for protocol {proto}."),
            ));
        }
    }
    if r.remote_ip_prefix.is_some() && r.remote_group_id.is_some() {
        return Err(fault::bad(
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id may be provided.",
        ));
    }
    Ok(())
}

/// The parts of a rule that decide what it matches.
struct RuleKey<'a> {
    sg: &'a str,
    direction: &'a str,
    ethertype: &'a str,
    protocol: Option<&'a str>,
    min: Option<i64>,
    max: Option<i64>,
    prefix: Option<&'a netmodel::Cidr>,
    remote_group: Option<&'a str>,
}

/// What a rule means, in one string: equal for rules that match the same
/// packets. A /0 prefix is the same as no prefix.
fn fingerprint(k: RuleKey<'_>) -> String {
    let RuleKey {
        sg,
        direction,
        ethertype,
        protocol,
        min,
        max,
        prefix,
        remote_group,
    } = k;
    let proto = protocol
        .and_then(protocol_number)
        .map(|n| n.to_string())
        .unwrap_or_default();
    let prefix = prefix
        .filter(|p| p.prefix > 0)
        .map(|p| addr::normalize(p).to_string())
        .unwrap_or_default();
    let n = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    format!(
        "{sg}|{direction}|{ethertype}|{proto}|{}|{}|{prefix}|{}",
        n(min),
        n(max),
        remote_group.unwrap_or("")
    )
}

impl Network {
    /// The project's default group, created (with upstream's four default
    /// rules) if it has none yet. Writes happen in the caller's
    /// transaction, which holds the write lock, so two first uses cannot
    /// both create one.
    pub async fn ensure_default_security_group(
        &self,
        tx: &mut Tx,
        project_id: &str,
    ) -> Result<Option<String>, Error> {
        if project_id.is_empty() {
            return Ok(None);
        }
        if let Some(id) = db::secgroup::default_of(tx.c(), project_id)
            .await
            .map_err(db_err)?
        {
            return Ok(Some(id));
        }
        let sg = db::secgroup::SecurityGroup {
            id: super::new_id(),
            project_id: project_id.to_string(),
            name: "default".into(),
            description: "Default security group".into(),
            created_at: tx.now,
            updated_at: tx.now,
            revision_number: 1,
        };
        db::secgroup::insert(tx.c(), &sg).await.map_err(db_err)?;
        db::secgroup::set_default(tx.c(), project_id, &sg.id)
            .await
            .map_err(db_err)?;
        for ethertype in ["IPv4", "IPv6"] {
            self.insert_rule(tx, &sg, "ingress", ethertype, Some(&sg.id))
                .await?;
            self.insert_rule(tx, &sg, "egress", ethertype, None).await?;
        }
        Ok(Some(sg.id))
    }

    async fn insert_rule(
        &self,
        tx: &mut Tx,
        sg: &db::secgroup::SecurityGroup,
        direction: &str,
        ethertype: &str,
        remote_group: Option<&str>,
    ) -> Result<(), Error> {
        let r = db::secgroup::Rule {
            id: super::new_id(),
            security_group_id: sg.id.clone(),
            project_id: sg.project_id.clone(),
            direction: direction.into(),
            ethertype: ethertype.into(),
            protocol: None,
            port_range_min: None,
            port_range_max: None,
            remote_ip_prefix: None,
            remote_group_id: remote_group.map(str::to_string),
            description: String::new(),
            fingerprint: fingerprint(RuleKey {
                sg: &sg.id,
                direction,
                ethertype,
                protocol: None,
                min: None,
                max: None,
                prefix: None,
                remote_group,
            }),
            created_at: tx.now,
            updated_at: tx.now,
            revision_number: 0,
        };
        db::secgroup::rule_insert(tx.c(), &r).await.map_err(db_err)
    }

    /// Ensures the caller's project has its default group (on listing, as
    /// Neutron does), in a transaction of its own, only when it is missing.
    pub async fn ensure_default_for_caller(&self, ctx: &AuthContext) -> Result<(), Error> {
        let Some(project) = ctx.project_id() else {
            return Ok(());
        };
        if db::secgroup::default_of(&self.pool, project)
            .await
            .map_err(db_err)?
            .is_some()
        {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        self.ensure_default_security_group(&mut tx, project).await?;
        self.commit(tx).await
    }

    pub async fn load_security_group(&self, id: &str) -> Result<SecurityGroupView, Error> {
        self.security_group_views(Some(id))
            .await?
            .pop()
            .ok_or_else(|| fault::security_group_not_found(id))
    }

    pub async fn security_group_create(
        &self,
        ctx: &AuthContext,
        project_id: Option<String>,
        name: String,
        description: String,
        tags: Option<Vec<String>>,
    ) -> Result<SecurityGroupView, Error> {
        let owner = self.owner_for_create(ctx, project_id)?;
        let target = Target::new()
            .with("project_id", &owner)
            .with("tenant_id", &owner);
        self.enforce(ctx, "create_security_group", &target)?;
        if name.eq_ignore_ascii_case("default") {
            return Err(default_exists());
        }
        let mut tx = self.begin().await?;
        self.ensure_default_security_group(&mut tx, &owner).await?;
        self.check_quota(&mut tx, &owner, "security_group", 1)
            .await?;
        let sg = db::secgroup::SecurityGroup {
            id: super::new_id(),
            project_id: owner,
            name,
            description,
            created_at: tx.now,
            updated_at: tx.now,
            revision_number: 1,
        };
        db::secgroup::insert(tx.c(), &sg).await.map_err(db_err)?;
        for ethertype in ["IPv4", "IPv6"] {
            self.insert_rule(&mut tx, &sg, "egress", ethertype, None)
                .await?;
        }
        if let Some(t) = &tags {
            super::network::set_tags(&mut tx, "security-groups", &sg.id, t).await?;
        }
        let id = sg.id.clone();
        self.commit(tx).await?;
        self.load_security_group(&id).await
    }

    pub async fn security_group_update(
        &self,
        ctx: &AuthContext,
        id: &str,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<SecurityGroupView, Error> {
        let mut tx = self.begin().await?;
        let mut sg = db::secgroup::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::security_group_not_found(id))?;
        self.enforce_or_hide(
            ctx,
            "update_security_group",
            "get_security_group",
            &sg_target(&sg),
            || fault::security_group_not_found(id),
        )?;
        if let Some(n) = name {
            let is_default = db::secgroup::default_of(tx.c(), &sg.project_id)
                .await
                .map_err(db_err)?
                .as_deref()
                == Some(id);
            if is_default && n != sg.name {
                return Err(fault::conflict(
                    "SecurityGroupCannotUpdateDefault",
                    "Updating default security group not allowed.",
                ));
            }
            if !is_default && n.eq_ignore_ascii_case("default") {
                return Err(default_exists());
            }
            sg.name = n;
        }
        if let Some(d) = description {
            sg.description = d;
        }
        sg.updated_at = tx.now;
        sg.revision_number += 1;
        db::secgroup::update(tx.c(), &sg).await.map_err(db_err)?;
        self.commit(tx).await?;
        self.load_security_group(id).await
    }

    pub async fn security_group_delete(&self, ctx: &AuthContext, id: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let sg = db::secgroup::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::security_group_not_found(id))?;
        self.enforce_or_hide(
            ctx,
            "delete_security_group",
            "get_security_group",
            &sg_target(&sg),
            || fault::security_group_not_found(id),
        )?;
        let is_default = db::secgroup::default_of(tx.c(), &sg.project_id)
            .await
            .map_err(db_err)?
            .as_deref()
            == Some(id);
        if is_default && !self.is_admin(ctx) {
            return Err(fault::conflict(
                "SecurityGroupCannotRemoveDefault",
                "Insufficient rights for removing default security group.",
            ));
        }
        if db::port::count_in_security_group(tx.c(), id)
            .await
            .map_err(db_err)?
            > 0
        {
            return Err(fault::conflict(
                "SecurityGroupInUse",
                format!("Security Group {id} in use."),
            ));
        }
        db::misc::clear_tags(tx.c(), "security-groups", id)
            .await
            .map_err(db_err)?;
        db::secgroup::delete(tx.c(), id).await.map_err(db_err)?;
        self.commit(tx).await
    }

    pub async fn load_rule(&self, id: &str) -> Result<(db::secgroup::Rule, String), Error> {
        self.rule_views(Some(id))
            .await?
            .pop()
            .ok_or_else(|| fault::security_group_rule_not_found(id))
    }

    pub async fn rule_create(
        &self,
        ctx: &AuthContext,
        mut req: RuleCreate,
    ) -> Result<(db::secgroup::Rule, String), Error> {
        normalize_rule(&mut req)?;
        let mut tx = self.begin().await?;
        let sg = db::secgroup::get(tx.c(), &req.security_group_id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::security_group_not_found(&req.security_group_id))?;
        let owner = req
            .project_id
            .clone()
            .unwrap_or_else(|| sg.project_id.clone());
        let target = Target::new()
            .with("project_id", &owner)
            .with("tenant_id", &owner)
            .with("security_group:project_id", &sg.project_id);
        if !self.allowed(ctx, "create_security_group_rule", &target) {
            return Err(
                if self.allowed(ctx, "get_security_group", &sg_target(&sg)) {
                    fault::policy("create_security_group_rule")
                } else {
                    fault::security_group_not_found(&sg.id)
                },
            );
        }
        if let Some(rg) = &req.remote_group_id {
            let remote = db::secgroup::get(tx.c(), rg)
                .await
                .map_err(db_err)?
                .ok_or_else(|| fault::security_group_not_found(rg))?;
            if remote.project_id != owner && !self.is_admin(ctx) {
                return Err(fault::security_group_not_found(rg));
            }
        }
        let fp = fingerprint(RuleKey {
            sg: &sg.id,
            direction: &req.direction,
            ethertype: &req.ethertype,
            protocol: req.protocol.as_deref(),
            min: req.port_range_min,
            max: req.port_range_max,
            prefix: req.remote_ip_prefix.as_ref(),
            remote_group: req.remote_group_id.as_deref(),
        });
        if let Some(existing) = db::secgroup::rule_by_fingerprint(tx.c(), &fp)
            .await
            .map_err(db_err)?
        {
            return Err(fault::conflict(
                "SecurityGroupRuleExists",
                format!(
                    "Security group rule already exists. Rule id is {}.",
                    existing.id
                ),
            ));
        }
        self.check_quota(&mut tx, &owner, "security_group_rule", 1)
            .await?;
        let r = db::secgroup::Rule {
            id: super::new_id(),
            security_group_id: sg.id.clone(),
            project_id: owner,
            direction: req.direction,
            ethertype: req.ethertype,
            protocol: req.protocol,
            port_range_min: req.port_range_min,
            port_range_max: req.port_range_max,
            remote_ip_prefix: req.remote_ip_prefix.map(|p| p.to_string()),
            remote_group_id: req.remote_group_id,
            description: req.description,
            fingerprint: fp,
            created_at: tx.now,
            updated_at: tx.now,
            revision_number: 0,
        };
        db::secgroup::rule_insert(tx.c(), &r)
            .await
            .map_err(db_err)?;
        // A rule change is a change of its group.
        let mut sg2 = sg.clone();
        sg2.revision_number += 1;
        sg2.updated_at = tx.now;
        db::secgroup::update(tx.c(), &sg2).await.map_err(db_err)?;
        let id = r.id.clone();
        self.commit(tx).await?;
        self.load_rule(&id).await
    }

    pub async fn rule_update(
        &self,
        ctx: &AuthContext,
        id: &str,
        description: Option<String>,
    ) -> Result<(db::secgroup::Rule, String), Error> {
        let mut tx = self.begin().await?;
        let mut r = db::secgroup::rule_get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::security_group_rule_not_found(id))?;
        let sg_project = db::secgroup::get(tx.c(), &r.security_group_id)
            .await
            .map_err(db_err)?
            .map(|g| g.project_id)
            .unwrap_or_default();
        self.enforce_or_hide(
            ctx,
            "update_security_group_rule",
            "get_security_group_rule",
            &rule_target(&r, &sg_project),
            || fault::security_group_rule_not_found(id),
        )?;
        if let Some(d) = description {
            r.description = d;
        }
        r.updated_at = tx.now;
        r.revision_number += 1;
        db::secgroup::rule_update(tx.c(), &r)
            .await
            .map_err(db_err)?;
        self.commit(tx).await?;
        self.load_rule(id).await
    }

    pub async fn rule_delete(&self, ctx: &AuthContext, id: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let r = db::secgroup::rule_get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::security_group_rule_not_found(id))?;
        let sg = db::secgroup::get(tx.c(), &r.security_group_id)
            .await
            .map_err(db_err)?;
        let sg_project = sg
            .as_ref()
            .map(|g| g.project_id.clone())
            .unwrap_or_default();
        self.enforce_or_hide(
            ctx,
            "delete_security_group_rule",
            "get_security_group_rule",
            &rule_target(&r, &sg_project),
            || fault::security_group_rule_not_found(id),
        )?;
        db::secgroup::rule_delete(tx.c(), id)
            .await
            .map_err(db_err)?;
        if let Some(mut g) = sg {
            g.revision_number += 1;
            g.updated_at = tx.now;
            db::secgroup::update(tx.c(), &g).await.map_err(db_err)?;
        }
        self.commit(tx).await
    }

    /// Checks that every group exists and may be used by a port of
    /// `project_id` (its own, or any for an admin).
    pub async fn check_port_security_groups(
        &self,
        tx: &mut Tx,
        ctx: &AuthContext,
        project_id: &str,
        ids: &[String],
    ) -> Result<(), Error> {
        for id in ids {
            let sg = db::secgroup::get(tx.c(), id)
                .await
                .map_err(db_err)?
                .ok_or_else(|| fault::security_group_not_found(id))?;
            if sg.project_id != project_id && !self.is_admin(ctx) {
                return Err(fault::security_group_not_found(id));
            }
        }
        Ok(())
    }
}

fn default_exists() -> Error {
    fault::conflict(
        "SecurityGroupDefaultAlreadyExists",
        "Default security group already exists.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(proto: Option<&str>, min: Option<i64>, max: Option<i64>) -> RuleCreate {
        RuleCreate {
            security_group_id: "sg".into(),
            direction: "ingress".into(),
            ethertype: "IPv4".into(),
            protocol: proto.map(str::to_string),
            port_range_min: min,
            port_range_max: max,
            ..Default::default()
        }
    }

    #[test]
    fn protocols_by_name_or_number() {
        assert_eq!(
            convert_protocol(&json!("TCP")).unwrap().as_deref(),
            Some("tcp")
        );
        assert_eq!(convert_protocol(&json!(6)).unwrap().as_deref(), Some("6"));
        assert_eq!(
            convert_protocol(&json!("17")).unwrap().as_deref(),
            Some("17")
        );
        assert_eq!(convert_protocol(&json!("any")).unwrap(), None);
        assert_eq!(convert_protocol(&json!(null)).unwrap(), None);
        assert!(convert_protocol(&json!("256")).is_err());
        assert!(convert_protocol(&json!("bogus")).is_err());
        assert!(convert_protocol(&json!(-1)).is_err());
        assert!(convert_protocol(&json!([1])).is_err());
    }

    #[test]
    fn port_ranges_are_checked() {
        assert!(normalize_rule(&mut rule(Some("tcp"), Some(22), Some(22))).is_ok());
        let e = normalize_rule(&mut rule(Some("tcp"), Some(100), Some(20))).unwrap_err();
        assert_eq!(e.kind, Some("SecurityGroupInvalidPortRange"));
        let e = normalize_rule(&mut rule(Some("tcp"), Some(0), Some(20))).unwrap_err();
        assert_eq!(e.kind, Some("SecurityGroupInvalidPortValue"));
        let e = normalize_rule(&mut rule(None, Some(1), Some(2))).unwrap_err();
        assert_eq!(e.kind, Some("SecurityGroupProtocolRequiredWithPorts"));
        let e = normalize_rule(&mut rule(Some("gre"), Some(1), Some(2))).unwrap_err();
        assert_eq!(e.kind, Some("SecurityGroupInvalidProtocolForPort"));
        let e = normalize_rule(&mut rule(Some("icmp"), None, Some(0))).unwrap_err();
        assert_eq!(e.kind, Some("SecurityGroupMissingIcmpType"));
        let e = normalize_rule(&mut rule(Some("icmp"), Some(300), None)).unwrap_err();
        assert_eq!(e.kind, Some("SecurityGroupInvalidIcmpValue"));
        let mut full = rule(Some("udp"), Some(1), Some(65535));
        normalize_rule(&mut full).unwrap();
        assert_eq!((full.port_range_min, full.port_range_max), (None, None));
        let e = normalize_rule(&mut rule(Some("ipv6-icmp"), None, None)).unwrap_err();
        assert_eq!(e.kind, Some("SecurityGroupEthertypeConflictWithProtocol"));
        let mut v6 = rule(Some("icmp"), None, None);
        v6.ethertype = "IPv6".into();
        normalize_rule(&mut v6).unwrap();
        assert_eq!(v6.protocol.as_deref(), Some("ipv6-icmp"));
    }

    #[test]
    fn prefix_must_match_ethertype_and_exclude_groups() {
        let mut r = rule(None, None, None);
        r.remote_ip_prefix = addr::parse_cidr("fd00::/64");
        let e = normalize_rule(&mut r).unwrap_err();
        assert_eq!(e.kind, Some("SecurityGroupRuleParameterConflict"));
        let mut r = rule(None, None, None);
        r.remote_ip_prefix = addr::parse_cidr("10.0.0.0/8");
        r.remote_group_id = Some("g".into());
        let e = normalize_rule(&mut r).unwrap_err();
        assert_eq!(e.kind, Some("SecurityGroupMultipleRemoteEntites"));
    }

    #[test]
    fn fingerprints_equate_synonyms() {
        let any4 = addr::parse_cidr("0.0.0.0/0").unwrap();
        let a = fingerprint(RuleKey {
            sg: "s",
            direction: "ingress",
            ethertype: "IPv4",
            protocol: Some("tcp"),
            min: Some(22),
            max: Some(22),
            prefix: None,
            remote_group: None,
        });
        let b = fingerprint(RuleKey {
            sg: "s",
            direction: "ingress",
            ethertype: "IPv4",
            protocol: Some("6"),
            min: Some(22),
            max: Some(22),
            prefix: Some(&any4),
            remote_group: None,
        });
        assert_eq!(a, b);
        let host = addr::parse_cidr("10.0.0.5/24").unwrap();
        let net = addr::parse_cidr("10.0.0.0/24").unwrap();
        assert_eq!(
            fingerprint(RuleKey {
                sg: "s",
                direction: "ingress",
                ethertype: "IPv4",
                protocol: None,
                min: None,
                max: None,
                prefix: Some(&host),
                remote_group: None
            }),
            fingerprint(RuleKey {
                sg: "s",
                direction: "ingress",
                ethertype: "IPv4",
                protocol: None,
                min: None,
                max: None,
                prefix: Some(&net),
                remote_group: None
            })
        );
    }
}
