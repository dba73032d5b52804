//! The address guard of `web-download`: which hosts the image service may
//! fetch from on a user's behalf.
//!
//! A user who can make the server fetch a URL can make it reach what the
//! server reaches: the metadata service at 169.254.169.254, services bound
//! to loopback, the management network. So every address the fetcher would
//! connect to must be a global unicast address. Host names are resolved by
//! the fetcher itself, every resolved address is checked, and it connects
//! to the address it checked (never resolving again, so DNS rebinding
//! gains nothing). IP literals are read the way `inet_aton` and browsers
//! read them — `127.1`, `0x7f000001`, `2130706433`, `017700000001` are all
//! 127.0.0.1 — so that no spelling slips past a check that only knows the
//! dotted-quad form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parses a URL host as an IP literal, in every spelling a resolver or a
/// browser would accept: bracketed IPv6, dotted quads and their shortened
/// forms (`a.b.c` and `a.b` with the last part filling the remaining
/// bytes), and each part in decimal, octal (leading `0`) or hex (`0x`).
/// Returns `None` for anything that is not an IP literal (a host name).
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let h = host.trim_end_matches('.');
    if let Some(inner) = h.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        // Zone ids (`%eth0`) are refused by not parsing.
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(v6) = h.parse::<Ipv6Addr>() {
        return Some(IpAddr::V6(v6));
    }
    parse_ipv4_loose(h).map(IpAddr::V4)
}

fn parse_part(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(x) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (x, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() {
        // "0x" alone is 0 to inet_aton.
        return if radix == 16 { Some(0) } else { None };
    }
    if digits.len() > 20 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

fn parse_ipv4_loose(h: &str) -> Option<Ipv4Addr> {
    if h.is_empty()
        || !h
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b'x' || b == b'X')
    {
        return None;
    }
    let parts: Vec<&str> = h.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let nums: Vec<u64> = parts.iter().map(|p| parse_part(p)).collect::<Option<_>>()?;
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - init.len() as u32);
    if rest_bits < 64 && *last >= (1u64 << rest_bits) {
        return None;
    }
    let mut v: u32 = 0;
    for (i, n) in init.iter().enumerate() {
        v |= (*n as u32) << (24 - 8 * i as u32);
    }
    v |= *last as u32;
    Some(Ipv4Addr::from(v))
}

/// Why an address is refused, for the user's error message.
pub fn refusal(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4, allow_loopback),
        IpAddr::V6(v6) => refusal_v6(v6, allow_loopback),
    }
}

fn in_net(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn refusal_v4(ip: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    const NETS: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "a 'this network' address"),
        ([10, 0, 0, 0], 8, "a private address"),
        ([100, 64, 0, 0], 10, "a shared (carrier-grade NAT) address"),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([169, 254, 0, 0], 16, "a link-local address"),
        ([172, 16, 0, 0], 12, "a private address"),
        ([192, 0, 0, 0], 24, "an IETF protocol assignment address"),
        ([192, 0, 2, 0], 24, "a documentation address"),
        ([192, 88, 99, 0], 24, "a 6to4 relay address"),
        ([192, 168, 0, 0], 16, "a private address"),
        ([198, 18, 0, 0], 15, "a benchmarking address"),
        ([198, 51, 100, 0], 24, "a documentation address"),
        ([203, 0, 113, 0], 24, "a documentation address"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([240, 0, 0, 0], 4, "a reserved or broadcast address"),
    ];
    if allow_loopback && ip.is_loopback() {
        return None;
    }
    NETS.iter()
        .find(|(net, prefix, _)| in_net(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn refusal_v6(ip: Ipv6Addr, allow_loopback: bool) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        return (!allow_loopback).then_some("a loopback address");
    }
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    // Addresses that carry an IPv4 address: judge the IPv4 address.
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible), 64:ff9b::a.b.c.d
    // (NAT64), 2002:AABB:CCDD:: (6to4).
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[0..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        return refusal_v4(embedded(s[6], s[7]), allow_loopback).or(
            // Even a public IPv4 address written as IPv4-compatible IPv6
            // is a deprecated form nothing legitimate uses.
            (s[5] == 0).then_some("an IPv4-compatible IPv6 address"),
        );
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return refusal_v4(embedded(s[6], s[7]), allow_loopback);
    }
    if s[0] == 0x2002 {
        return refusal_v4(embedded(s[1], s[2]), allow_loopback);
    }
    match s[0] {
        x if x & 0xfe00 == 0xfc00 => Some("a unique local (private) address"),
        x if x & 0xffc0 == 0xfe80 => Some("a link-local address"),
        x if x & 0xffc0 == 0xfec0 => Some("a site-local address"),
        x if x & 0xff00 == 0xff00 => Some("a multicast address"),
        0x2001 if s[1] == 0x0db8 => Some("a documentation address"),
        0x2001 if s[1] < 0x0200 => Some("an IETF protocol assignment address"),
        0x0100 if s[1..4] == [0, 0, 0] => Some("a discard-only address"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(host: &str) -> bool {
        let ip = parse_ip_literal(host).unwrap_or_else(|| panic!("{host} should parse as an IP"));
        refusal(ip, false).is_some()
    }

    #[test]
    fn every_spelling_of_loopback_is_loopback() {
        for h in [
            "127.0.0.1",
            "127.1",
            "127.0.1",
            "0x7f000001",
            "0X7F000001",
            "2130706433",
            "017700000001",
            "0177.0.0.1",
            "0x7f.1",
            "0x7f.0.0.1",
            "127.0.0.1.",
            "127.255.255.254",
            "[::1]",
            "::1",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::127.0.0.1]",
            "[64:ff9b::127.0.0.1]",
            "[2002:7f00:1::]",
        ] {
            let ip = parse_ip_literal(h).unwrap_or_else(|| panic!("{h} should parse"));
            assert_eq!(
                refusal(ip, false),
                Some("a loopback address"),
                "{h} -> {ip}"
            );
        }
    }

    #[test]
    fn private_link_local_and_special_ranges_are_refused() {
        for h in [
            "169.254.169.254",
            "0xa9fea9fe",
            "2852039166",
            "0251.0376.0251.0376",
            "10.0.0.1",
            "10.255.255.255",
            "012.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.2.5",
            "[fc00::1]",
            "[fd12:3456::1]",
            "[fe80::1]",
            "[febf::1]",
            "[fec0::1]",
            "[ff02::1]",
            "[::]",
            "[::ffff:169.254.169.254]",
            "[::ffff:10.0.0.1]",
            "[::ffff:192.168.0.1]",
            "[2001:db8::1]",
        ] {
            assert!(refused(h), "{h} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for h in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.169.0.1",
            "11.0.0.1",
            "[2606:4700:4700::1111]",
            "[::ffff:8.8.8.8]",
        ] {
            assert!(!refused(h), "{h} must be allowed");
        }
    }

    #[test]
    fn host_names_and_garbage_are_not_ip_literals() {
        for h in [
            "example.com",
            "localhost",
            "127.0.0.1.nip.io",
            "1.2.3.4.5",
            "256.1.1.1",
            "",
            "[::1%eth0]",
            "08.1.1.1",
            "4294967296",
        ] {
            assert_eq!(parse_ip_literal(h), None, "{h}");
        }
        // "0x" alone is 0, as inet_aton reads it.
        assert_eq!(parse_ip_literal("0x"), Some("0.0.0.0".parse().unwrap()));
        assert_eq!(
            parse_ip_literal("0x.0.0.1"),
            Some("0.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn the_test_switch_allows_loopback_only() {
        let lo = parse_ip_literal("127.0.0.1").unwrap();
        assert_eq!(refusal(lo, true), None);
        assert_eq!(refusal("::1".parse().unwrap(), true), None);
        assert!(refusal("169.254.169.254".parse().unwrap(), true).is_some());
        assert!(refusal("10.0.0.1".parse().unwrap(), true).is_some());
    }
}
