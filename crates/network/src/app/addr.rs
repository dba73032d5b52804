//! Address arithmetic: strict parsing, CIDR math on `u128`, allocation
//! pools, first-free search, EUI-64 and MAC addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netmodel::Cidr;

/// Parses an address as Neutron's validator accepts it: no white space, no
/// leading zeros in IPv4 octets (Rust's parser refuses those), IPv4 only in
/// dotted-quad form.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    if s.is_empty() || s.len() > 45 || s.chars().any(|c| c.is_whitespace()) {
        return None;
    }
    if !s.contains(':') && s.split('.').count() != 4 {
        return None;
    }
    s.parse().ok()
}

/// Parses `addr/prefix` (the slash is required).
pub fn parse_cidr(s: &str) -> Option<Cidr> {
    let (a, p) = s.split_once('/')?;
    let addr = parse_ip(a)?;
    if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = p.parse().ok()?;
    if prefix as u32 > bits(addr) {
        return None;
    }
    Some(Cidr { addr, prefix })
}

pub fn bits(ip: IpAddr) -> u32 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// An address as 32 hex digits of its value: text whose order is the
/// addresses' numeric order within one family (`ip_allocation.ip_key`).
pub fn sort_key(v: u128) -> String {
    format!("{v:032x}")
}

pub fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

fn host_mask(c: &Cidr) -> u128 {
    let host_bits = bits(c.addr) - c.prefix as u32;
    if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// The first address of the CIDR (its network address).
pub fn first(c: &Cidr) -> u128 {
    to_u128(c.addr) & !host_mask(c)
}

/// The last address of the CIDR (the IPv4 broadcast address).
pub fn last(c: &Cidr) -> u128 {
    first(c) | host_mask(c)
}

/// The CIDR with its host bits cleared.
pub fn normalize(c: &Cidr) -> Cidr {
    Cidr {
        addr: from_u128(first(c), c.addr.is_ipv6()),
        prefix: c.prefix,
    }
}

pub fn contains(c: &Cidr, ip: IpAddr) -> bool {
    ip.is_ipv4() == c.addr.is_ipv4() && {
        let v = to_u128(ip);
        v >= first(c) && v <= last(c)
    }
}

pub fn overlaps(a: &Cidr, b: &Cidr) -> bool {
    a.addr.is_ipv4() == b.addr.is_ipv4() && first(a) <= last(b) && first(b) <= last(a)
}

/// The dotted netmask (IPv4) or prefix mask (IPv6) of a CIDR.
pub fn netmask(c: &Cidr) -> IpAddr {
    let total = bits(c.addr);
    let mask = if c.prefix == 0 {
        0
    } else {
        (u128::MAX << (128 - c.prefix as u32)) >> (128 - total)
    };
    from_u128(mask, c.addr.is_ipv6())
}

/// Number of addresses in an inclusive range, saturating.
pub fn count(start: u128, end: u128) -> u128 {
    end.saturating_sub(start).saturating_add(1)
}

/// An inclusive address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    pub start: u128,
    pub end: u128,
}

/// Neutron's default pools: every address but the network address, the
/// IPv4 broadcast address and the gateway.
pub fn default_pools(c: &Cidr, gateway: Option<IpAddr>) -> Vec<Range> {
    let (f, l) = (first(c), last(c));
    if f == l {
        return vec![Range { start: f, end: l }];
    }
    let start = f + 1;
    let end = if c.addr.is_ipv4() { l - 1 } else { l };
    if start >= end {
        return Vec::new();
    }
    let mut out = vec![Range { start, end }];
    if let Some(g) = gateway.filter(|g| contains(c, *g)) {
        let g = to_u128(g);
        out = out
            .into_iter()
            .flat_map(|r| {
                if g < r.start || g > r.end {
                    vec![r]
                } else {
                    let mut parts = Vec::new();
                    if g > r.start {
                        parts.push(Range {
                            start: r.start,
                            end: g - 1,
                        });
                    }
                    if g < r.end {
                        parts.push(Range {
                            start: g + 1,
                            end: r.end,
                        });
                    }
                    parts
                }
            })
            .collect();
    }
    out
}

/// Parses a MAC address written with colons or dashes (case-insensitive).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        out[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A unicast, non-zero MAC (what a port may use).
pub fn is_unicast_mac(m: &[u8; 6]) -> bool {
    m[0] & 1 == 0 && m.iter().any(|b| *b != 0)
}

/// A random MAC with OpenStack's prefix `fa:16:3e`.
pub fn random_mac() -> String {
    let tail: [u8; 3] = rand::random();
    format_mac(&[0xfa, 0x16, 0x3e, tail[0], tail[1], tail[2]])
}

/// The SLAAC (EUI-64) address of a MAC in a /64.
pub fn eui64(prefix: &Cidr, mac: &[u8; 6]) -> Option<IpAddr> {
    if prefix.addr.is_ipv4() || prefix.prefix != 64 {
        return None;
    }
    let iid: u64 = u64::from_be_bytes([
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]);
    Some(from_u128(first(prefix) | iid as u128, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        parse_cidr(s).unwrap()
    }

    #[test]
    fn strict_parsing() {
        assert!(parse_ip("10.0.0.1").is_some());
        assert!(parse_ip("010.0.0.1").is_none());
        assert!(parse_ip(" 10.0.0.1").is_none());
        assert!(parse_ip("10.1").is_none());
        assert!(parse_ip("fd00::1").is_some());
        assert!(parse_cidr("10.0.0.0/24").is_some());
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("10.0.0.0").is_none());
        assert!(parse_cidr("10.0.0.0/+4").is_none());
        assert!(parse_cidr("10.0.0.0/24\n").is_none());
    }

    #[test]
    fn cidr_math() {
        let n = c("10.0.0.77/24");
        assert_eq!(normalize(&n).to_string(), "10.0.0.0/24");
        assert!(contains(&n, "10.0.0.255".parse().unwrap()));
        assert!(!contains(&n, "10.0.1.0".parse().unwrap()));
        assert!(overlaps(&c("10.0.0.0/16"), &c("10.0.3.0/24")));
        assert!(!overlaps(&c("10.0.0.0/24"), &c("10.0.1.0/24")));
        assert_eq!(netmask(&n).to_string(), "255.255.255.0");
        assert_eq!(
            netmask(&c("fd00::/64")).to_string(),
            "ffff:ffff:ffff:ffff::"
        );
        assert_eq!(netmask(&c("0.0.0.0/0")).to_string(), "0.0.0.0");
    }

    #[test]
    fn default_pools_skip_network_broadcast_and_gateway() {
        let n = c("10.0.0.0/24");
        let p = default_pools(&n, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(p.len(), 1);
        assert_eq!(from_u128(p[0].start, false).to_string(), "10.0.0.2");
        assert_eq!(from_u128(p[0].end, false).to_string(), "10.0.0.254");
        let p = default_pools(&n, Some("10.0.0.100".parse().unwrap()));
        assert_eq!(p.len(), 2);
        let v6 = default_pools(&c("fd00::/126"), None);
        assert_eq!(count(v6[0].start, v6[0].end), 3);
    }

    #[test]
    fn macs_and_eui64() {
        let m = parse_mac("FA:16:3E:00:11:22").unwrap();
        assert_eq!(format_mac(&m), "fa:16:3e:00:11:22");
        assert!(is_unicast_mac(&m));
        assert!(!is_unicast_mac(&parse_mac("01:00:5e:00:00:01").unwrap()));
        assert!(!is_unicast_mac(&[0; 6]));
        assert!(random_mac().starts_with("fa:16:3e:"));
        let ip = eui64(&c("fd00::/64"), &m).unwrap();
        assert_eq!(ip.to_string(), "fd00::f816:3eff:fe00:1122");
    }
}
