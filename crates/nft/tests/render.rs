//! Snapshot tests of the rendered nft JSON (one command per line), and
//! the fake's behaviour. No root needed. `UPDATE_EXPECT=1 cargo test`
//! refreshes the snapshots after an intended change.

use expect_test::{expect, Expect};
use nft::render::{self, port_commands, router_commands, AntispoofElems, PortChange, PortState};
use nft::{
    AllowedPair, Direction, EtherType, Fake, Firewall, FloatingIp, InternalLeg, PortRules,
    Protocol, Remote, RemoteGroup, RouterNat, SgRule,
};

fn lines(cmds: Vec<serde_json::Value>) -> String {
    cmds.iter().map(|c| c.to_string() + "\n").collect()
}

fn check(cmds: Vec<serde_json::Value>, e: Expect) {
    e.assert_eq(&lines(cmds));
}

fn sample() -> PortRules {
    PortRules {
        name: "tap3f1c2a4b-5d".into(),
        mark: 7 << 16,
        mac: "fa:16:3e:00:0a:01".parse().unwrap(),
        fixed_ips: vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
        allowed_pairs: vec![
            AllowedPair {
                ip: "10.0.1.0/24".parse().unwrap(),
                mac: Some("fa:16:3e:00:0b:01".parse().unwrap()),
            },
            // Inside the prefix above: a host address (as_ip4), not an
            // overlap in the interval set (nft refuses those).
            AllowedPair {
                ip: "10.0.1.7/32".parse().unwrap(),
                mac: None,
            },
        ],
        port_security: true,
        rules: vec![
            SgRule {
                ct_mark: 0x101,
                direction: Direction::Ingress,
                ethertype: EtherType::V4,
                protocol: Some(Protocol::TCP),
                port_range: Some((22, 23)),
                remote: Remote::Cidr("192.0.2.0/24".parse().unwrap()),
            },
            SgRule {
                ct_mark: 0x102,
                direction: Direction::Ingress,
                ethertype: EtherType::V4,
                protocol: Some(Protocol::ICMP),
                port_range: Some((8, 255)),
                remote: Remote::Group("5e1f".into()),
            },
            SgRule {
                ct_mark: 0x103,
                direction: Direction::Ingress,
                ethertype: EtherType::V6,
                protocol: Some(Protocol::parse("icmp").unwrap()),
                port_range: None,
                remote: Remote::Any,
            },
            SgRule {
                ct_mark: 0x104,
                direction: Direction::Egress,
                ethertype: EtherType::V4,
                protocol: Some(Protocol(112)),
                port_range: None,
                remote: Remote::Any,
            },
        ],
    }
}

fn new_port(p: &PortRules, create_chains: bool) -> Vec<serde_json::Value> {
    port_commands(&PortChange {
        port: p,
        previous: None,
        create_chains,
        drop_chains: vec![],
        unrevoke: vec![],
        gone_mark: None,
    })
}

fn installed(p: &PortRules) -> PortState {
    PortState {
        mark: p.mark,
        digest: p.digest(),
        chains: render::sg_chains_id(p),
        rule_marks: p.rules.iter().map(|r| r.ct_mark).collect(),
        elems: AntispoofElems::of(p),
        legacy: false,
    }
}

/// The verb and object of each command ("add element", "add chain" …).
fn verbs(cmds: &[serde_json::Value]) -> Vec<String> {
    cmds.iter()
        .map(|c| {
            let (verb, body) = c.as_object().unwrap().iter().next().unwrap();
            let obj = body.as_object().unwrap().keys().next().unwrap();
            format!("{verb} {obj}")
        })
        .collect()
}

#[test]
fn port_renders_to_the_expected_transaction() {
    check(
        new_port(&sample(), true),
        expect![[r#"
            {"add":{"set":{"family":"inet","name":"rh4-5e1f","table":"fs_sg","type":"ipv4_addr"}}}
            {"add":{"chain":{"family":"inet","name":"eg-5c44500b7f98","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"eg-5c44500b7f98","expr":[{"jump":{"target":"sg_eg_common"}}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"eg-5c44500b7f98","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv4"}},{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":112}},{"mangle":{"key":{"ct":{"key":"mark"}},"value":{"|":[{"ct":{"key":"mark"}},17039360]}}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"eg-5c44500b7f98","expr":[{"drop":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"chain":{"family":"inet","name":"in-5c44500b7f98","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-5c44500b7f98","expr":[{"jump":{"target":"sg_in_common"}}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-5c44500b7f98","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv4"}},{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":6}},{"match":{"left":{"payload":{"field":"dport","protocol":"th"}},"op":"==","right":{"range":[22,23]}}},{"match":{"left":{"payload":{"field":"saddr","protocol":"ip"}},"op":"==","right":{"prefix":{"addr":"192.0.2.0","len":24}}}},{"mangle":{"key":{"ct":{"key":"mark"}},"value":{"|":[{"ct":{"key":"mark"}},257]}}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-5c44500b7f98","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv4"}},{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":1}},{"match":{"left":{"payload":{"field":"type","protocol":"icmp"}},"op":"==","right":8}},{"match":{"left":{"payload":{"field":"saddr","protocol":"ip"}},"op":"==","right":"@rh4-5e1f"}},{"mangle":{"key":{"ct":{"key":"mark"}},"value":{"|":[{"ct":{"key":"mark"}},258]}}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-5c44500b7f98","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv6"}},{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":58}},{"mangle":{"key":{"ct":{"key":"mark"}},"value":{"|":[{"ct":{"key":"mark"}},259]}}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-5c44500b7f98","expr":[{"drop":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"element":{"elem":["tap3f1c2a4b-5d"],"family":"bridge","name":"secured","table":"fs_port"}}}
            {"add":{"element":{"elem":[{"concat":["tap3f1c2a4b-5d","10.0.0.5"]},{"concat":["tap3f1c2a4b-5d","10.0.1.7"]}],"family":"bridge","name":"as_ip4","table":"fs_port"}}}
            {"add":{"element":{"elem":[{"concat":["tap3f1c2a4b-5d","fd00::5"]},{"concat":["tap3f1c2a4b-5d","fe80::f816:3eff:fe00:a01"]},{"concat":["tap3f1c2a4b-5d","fe80::f816:3eff:fe00:b01"]}],"family":"bridge","name":"as_ip6","table":"fs_port"}}}
            {"add":{"element":{"elem":[{"concat":["tap3f1c2a4b-5d","fa:16:3e:00:0a:01"]},{"concat":["tap3f1c2a4b-5d","fa:16:3e:00:0b:01"]}],"family":"bridge","name":"as_mac","table":"fs_port"}}}
            {"add":{"element":{"elem":[{"concat":["tap3f1c2a4b-5d",{"prefix":{"addr":"10.0.1.0","len":24}}]}],"family":"bridge","name":"as_net4","table":"fs_port"}}}
            {"add":{"element":{"elem":[[{"elem":{"comment":"fs-digest:fd91f157028fcf7b","val":"tap3f1c2a4b-5d"}},458752]],"family":"bridge","name":"port_mark","table":"fs_port"}}}
            {"add":{"element":{"elem":[[458752,{"jump":{"target":"eg-5c44500b7f98"}}]],"family":"inet","name":"egress","table":"fs_sg"}}}
            {"add":{"element":{"elem":[[458752,{"jump":{"target":"in-5c44500b7f98"}}]],"family":"inet","name":"ingress","table":"fs_sg"}}}
        "#]],
    );
}

#[test]
fn a_port_whose_security_groups_are_installed_is_elements_only() {
    // The chains of its security-group set exist (another port has the
    // same groups): adding the port, changing its addresses, removing it
    // touch nothing but elements, whatever the number of ports.
    let p = sample();
    let add = new_port(&p, false);
    assert!(
        verbs(&add).iter().all(|v| v == "add element"),
        "{:?}",
        verbs(&add)
    );
    let mut moved = p.clone();
    moved.fixed_ips = vec!["10.0.0.9".parse().unwrap()];
    moved.allowed_pairs.pop();
    let prev = installed(&p);
    let upd = port_commands(&PortChange {
        port: &moved,
        previous: Some(&prev),
        create_chains: false,
        drop_chains: vec![],
        unrevoke: vec![],
        gone_mark: None,
    });
    assert!(
        verbs(&upd)
            .iter()
            .all(|v| v == "add element" || v == "delete element"),
        "{:?}",
        verbs(&upd)
    );
    check(
        upd,
        expect![[r#"
            {"delete":{"element":{"elem":[{"concat":["tap3f1c2a4b-5d","10.0.0.5"]},{"concat":["tap3f1c2a4b-5d","10.0.1.7"]}],"family":"bridge","name":"as_ip4","table":"fs_port"}}}
            {"delete":{"element":{"elem":[{"concat":["tap3f1c2a4b-5d","fd00::5"]}],"family":"bridge","name":"as_ip6","table":"fs_port"}}}
            {"delete":{"element":{"elem":["tap3f1c2a4b-5d"],"family":"bridge","name":"port_mark","table":"fs_port"}}}
            {"add":{"element":{"elem":[{"concat":["tap3f1c2a4b-5d","10.0.0.9"]}],"family":"bridge","name":"as_ip4","table":"fs_port"}}}
            {"add":{"element":{"elem":[[{"elem":{"comment":"fs-digest:231949343c8cbdce","val":"tap3f1c2a4b-5d"}},458752]],"family":"bridge","name":"port_mark","table":"fs_port"}}}
        "#]],
    );
    let rm = render::remove_port_commands(&p.name, &prev, &[]);
    assert!(verbs(&rm)
        .iter()
        .all(|v| v == "add element" || v == "delete element"));
    // No anonymous set anywhere: nft reads each with its elements before
    // every transaction.
    for c in new_port(&p, true).iter().chain(&rm).map(|c| c.to_string()) {
        assert!(!c.contains(r#"{"set":["#), "{c}");
    }
    assert!(!render::base_script().contains("{ 67"));
}

#[test]
fn ports_with_the_same_rules_share_chains_whatever_their_order() {
    let a = sample();
    let mut b = sample();
    b.name = "tapother".into();
    b.mark = 8 << 16;
    b.rules.reverse();
    b.fixed_ips = vec!["10.0.0.77".parse().unwrap()];
    assert_eq!(render::sg_chains_id(&a), render::sg_chains_id(&b));
    b.rules.pop();
    assert_ne!(render::sg_chains_id(&a), render::sg_chains_id(&b));
}

#[test]
fn changed_port_replaces_map_entries_revokes_dropped_rules_and_collects_chains() {
    let old = sample();
    let prev = installed(&old);
    let mut p = sample();
    p.rules.truncate(1);
    let cmds = port_commands(&PortChange {
        port: &p,
        previous: Some(&prev),
        create_chains: true,
        drop_chains: vec![prev.chains.clone()],
        unrevoke: vec![(7 << 16) | 0x105],
        gone_mark: Some(3 << 16),
    });
    let text = lines(cmds);
    assert!(
        text.contains(
            r#"{"delete":{"element":{"elem":[458752],"family":"inet","name":"egress","table":"fs_sg"}}}"#
        ),
        "{text}"
    );
    // 7 << 16 with 0x102 … 0x104, in either half of the session mark.
    assert!(text.contains(r#"{"add":{"element":{"elem":[{"elem":{"timeout":432000,"val":{"concat":[458752,258]}}},{"elem":{"timeout":432000,"val":{"concat":[458752,16908288]}}},{"elem":{"timeout":432000,"val":{"concat":[458752,259]}}},{"elem":{"timeout":432000,"val":{"concat":[458752,16973824]}}},{"elem":{"timeout":432000,"val":{"concat":[458752,260]}}},{"elem":{"timeout":432000,"val":{"concat":[458752,17039360]}}}],"family":"inet","name":"revoked_rules","table":"fs_sg"}}}"#), "{text}");
    assert!(text.contains(r#"{"delete":{"element":{"elem":[{"concat":[458752,261]},{"concat":[458752,17104896]}],"family":"inet","name":"revoked_rules","table":"fs_sg"}}}"#), "{text}");
    // The device was a removed port: its old mark goes.
    assert!(text.contains(r#"{"delete":{"element":{"elem":["tap3f1c2a4b-5d"],"family":"bridge","name":"gone_mark","table":"fs_port"}}}"#), "{text}");
    let old_eg = format!("eg-{}", prev.chains);
    assert!(
        text.ends_with(&format!(
            "{{\"delete\":{{\"chain\":{{\"family\":\"inet\",\"name\":\"in-{}\",\"table\":\"fs_sg\"}}}}}}\n",
            prev.chains
        )),
        "{text}"
    );
    assert!(text.contains(&old_eg));
    // A new mark: the rules the port lost are revoked under the mark its
    // packets now carry; the ones it kept still admit their sessions.
    let mut q = sample();
    q.mark = 9 << 16;
    q.rules.truncate(3);
    let text = lines(port_commands(&PortChange {
        port: &q,
        previous: Some(&prev),
        create_chains: false,
        drop_chains: vec![],
        unrevoke: vec![],
        gone_mark: None,
    }));
    assert!(text.contains(r#"{"add":{"element":{"elem":[{"elem":{"timeout":432000,"val":{"concat":[589824,260]}}},{"elem":{"timeout":432000,"val":{"concat":[589824,17039360]}}}],"family":"inet","name":"revoked_rules","table":"fs_sg"}}}"#), "{text}");
}

#[test]
fn router_nat_renders_recipe_section_5() {
    let nat = RouterNat {
        netns: "fsr-1".into(),
        gateway_leg: Some("qg-1".into()),
        gateway_ip: Some("203.0.113.10".parse().unwrap()),
        snat: true,
        internal: vec![InternalLeg {
            leg: "qr-1".into(),
            subnet: "10.0.0.0/24".parse().unwrap(),
        }],
        floating_ips: vec![FloatingIp {
            floating: "203.0.113.20".parse().unwrap(),
            fixed: "10.0.0.5".parse().unwrap(),
        }],
        metadata_port: Some(9697),
    };
    check(
        router_commands(&nat),
        expect![[r#"
            {"add":{"table":{"family":"ip","name":"fs_nat"}}}
            {"add":{"chain":{"family":"ip","hook":"prerouting","name":"nat-pre","policy":"accept","prio":-100,"table":"fs_nat","type":"nat"}}}
            {"add":{"chain":{"family":"ip","hook":"postrouting","name":"fip-post","policy":"accept","prio":90,"table":"fs_nat","type":"nat"}}}
            {"add":{"chain":{"family":"ip","hook":"postrouting","name":"nat-post","policy":"accept","prio":100,"table":"fs_nat","type":"nat"}}}
            {"add":{"chain":{"family":"ip","hook":"prerouting","name":"fip-guard","policy":"accept","prio":-150,"table":"fs_nat","type":"filter"}}}
            {"flush":{"table":{"family":"ip","name":"fs_nat"}}}
            {"add":{"rule":{"chain":"fip-guard","expr":[{"match":{"left":{"ct":{"key":"status"}},"op":"in","right":"dnat"}},{"match":{"left":{"ct":{"dir":"original","key":"ip daddr"}},"op":"!=","right":"169.254.169.254"}},{"match":{"left":{"concat":[{"ct":{"dir":"original","key":"ip daddr"}},{"ct":{"dir":"reply","key":"ip saddr"}}]},"op":"!=","right":{"set":[{"concat":["203.0.113.20","10.0.0.5"]}]}}},{"drop":null}],"family":"ip","table":"fs_nat"}}}
            {"add":{"rule":{"chain":"fip-guard","expr":[{"match":{"left":{"ct":{"key":"status"}},"op":"in","right":"snat"}},{"match":{"left":{"ct":{"dir":"reply","key":"ip daddr"}},"op":"!=","right":"203.0.113.10"}},{"match":{"left":{"concat":[{"ct":{"dir":"reply","key":"ip daddr"}},{"ct":{"dir":"original","key":"ip saddr"}}]},"op":"!=","right":{"set":[{"concat":["203.0.113.20","10.0.0.5"]}]}}},{"drop":null}],"family":"ip","table":"fs_nat"}}}
            {"add":{"rule":{"chain":"nat-pre","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"op":"==","right":"qr-1"}},{"match":{"left":{"payload":{"field":"daddr","protocol":"ip"}},"op":"==","right":"169.254.169.254"}},{"match":{"left":{"payload":{"field":"dport","protocol":"tcp"}},"op":"==","right":80}},{"redirect":{"port":9697}}],"family":"ip","table":"fs_nat"}}}
            {"add":{"rule":{"chain":"nat-pre","expr":[{"match":{"left":{"payload":{"field":"daddr","protocol":"ip"}},"op":"==","right":"203.0.113.20"}},{"dnat":{"addr":"10.0.0.5"}}],"family":"ip","table":"fs_nat"}}}
            {"add":{"rule":{"chain":"fip-post","expr":[{"match":{"left":{"meta":{"key":"oifname"}},"op":"==","right":"qg-1"}},{"match":{"left":{"payload":{"field":"saddr","protocol":"ip"}},"op":"==","right":"10.0.0.5"}},{"snat":{"addr":"203.0.113.20"}}],"family":"ip","table":"fs_nat"}}}
            {"add":{"rule":{"chain":"nat-post","expr":[{"match":{"left":{"meta":{"key":"oifname"}},"op":"==","right":"qg-1"}},{"match":{"left":{"payload":{"field":"saddr","protocol":"ip"}},"op":"==","right":{"prefix":{"addr":"10.0.0.0","len":24}}}},{"snat":{"addr":"203.0.113.10"}}],"family":"ip","table":"fs_nat"}}}
            {"add":{"rule":{"chain":"nat-post","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"op":"!=","right":"qg-1"}},{"match":{"left":{"ct":{"key":"status"}},"op":"in","right":"dnat"}},{"snat":{"addr":"203.0.113.10"}}],"family":"ip","table":"fs_nat"}}}
            {"add":{"rule":{"chain":"nat-post","comment":"fs-digest:2178ef18882c85c2","expr":[{"counter":{"bytes":0,"packets":0}}],"family":"ip","table":"fs_nat"}}}
        "#]],
    );
}

#[test]
fn base_script_is_stable() {
    expect![[r#"
        table bridge fs_port {
          map port_mark { type ifname : mark; }
          map gone_mark { type ifname : mark; flags timeout; }
          set secured { type ifname; }
          set as_mac { type ifname . ether_addr; }
          set as_ip4 { type ifname . ipv4_addr; }
          set as_ip6 { type ifname . ipv6_addr; }
          set as_net4 { type ifname . ipv4_addr; flags interval; }
          set as_net6 { type ifname . ipv6_addr; flags interval; }
          chain antispoof {
            iifname . ether saddr != @as_mac drop
            ether type arp jump antispoof_arp
            udp sport 67 drop
            udp sport 547 drop
            ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept
            iifname . ip saddr @as_ip4 accept
            iifname . ip saddr @as_net4 accept
            ip6 saddr :: meta l4proto ipv6-icmp accept
            iifname . ip6 saddr @as_ip6 accept
            iifname . ip6 saddr @as_net6 accept
            drop
          }
          chain antispoof_arp {
            iifname . arp saddr ether != @as_mac drop
            iifname . arp saddr ip @as_ip4 accept
            iifname . arp saddr ip @as_net4 accept
            drop
          }
          chain antispoof_pre { type filter hook prerouting priority -350; policy accept; iifname @secured jump antispoof; }
          chain mark_pre { type filter hook prerouting priority -300; policy accept; meta mark set iifname map @port_mark; meta mark set iifname map @gone_mark; }
          chain mark_fwd { type filter hook forward priority -200; policy accept; meta mark set 0; meta mark set oifname map @port_mark; meta mark set oifname map @gone_mark; }
        }
        table inet fs_sg {
          map zones {
            typeof iifname : ct zone
          }
          map egress { type mark : verdict; }
          map ingress { type mark : verdict; }
          set revoked_rules { type mark . mark; flags timeout; }
          set revoked_remote4 { type mark . ipv4_addr; flags timeout; }
          set revoked_remote6 { type mark . ipv6_addr; flags timeout; }
          set nd_out { type icmpv6_type; elements = { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report }; }
          set nd_in { type icmpv6_type; elements = { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query }; }
          chain sg_eg_common {
            meta nfproto ipv4 udp sport 68 udp dport 67 accept
            meta nfproto ipv6 udp sport 546 udp dport 547 accept
            meta l4proto ipv6-icmp icmpv6 type @nd_out accept
            meta l4proto udp udp sport 67 drop
            meta l4proto udp udp sport 547 drop
          }
          chain sg_in_common {
            meta nfproto ipv4 udp sport 67 udp dport 68 accept
            meta nfproto ipv6 udp sport 547 udp dport 546 accept
            meta l4proto ipv6-icmp icmpv6 type @nd_in accept
          }
          chain zone_raw { type filter hook prerouting priority raw; policy accept; ct zone set iifname map @zones; }
          chain sg_pre { type filter hook prerouting priority 0; policy accept; ct direction original meta mark . ct mark and 0xffff0000 @revoked_rules drop; ct direction reply meta mark . ct mark and 0x0000ffff @revoked_rules drop; ct state established,related accept; meta mark vmap @egress; }
          chain sg_fwd { type filter hook forward priority 0; policy accept; ct direction original meta mark . ct mark and 0x0000ffff @revoked_rules drop; ct direction reply meta mark . ct mark and 0xffff0000 @revoked_rules drop; meta nfproto ipv4 ct mark and 0x0000ffff . ct original ip saddr @revoked_remote4 drop; meta nfproto ipv4 ct mark and 0xffff0000 . ct original ip daddr @revoked_remote4 drop; meta nfproto ipv6 ct mark and 0x0000ffff . ct original ip6 saddr @revoked_remote6 drop; meta nfproto ipv6 ct mark and 0xffff0000 . ct original ip6 daddr @revoked_remote6 drop; ct state established,related accept; ct state invalid drop; meta mark vmap @ingress; }
        }
    "#]]
    .assert_eq(&render::base_script());
}

#[test]
fn the_per_port_layout_is_completed_in_place() {
    let up = render::upgrade_script();
    assert!(up.contains("add rule bridge fs_port antispoof_pre iifname @secured jump antispoof\n"));
    // Its hook chains are rewritten as the previous layout's are.
    assert!(
        up.ends_with(&render::shared_chains_upgrade_script()),
        "{up}"
    );
    // Only what that layout lacks: its hook chains and sets stay.
    for kept in [
        "chain sg_fwd {",
        "chain antispoof_pre {",
        "set revoked {",
        "map egress",
    ] {
        assert!(!up.contains(kept), "{kept}");
    }
}

#[test]
fn the_previous_layout_gets_session_halves_in_place() {
    expect![[r#"
        table bridge fs_port {
          map gone_mark { type ifname : mark; flags timeout; }
        }
        table inet fs_sg {
          set revoked_rules { type mark . mark; flags timeout; }
          set revoked_remote4 { type mark . ipv4_addr; flags timeout; }
          set revoked_remote6 { type mark . ipv6_addr; flags timeout; }
        }
        flush chain bridge fs_port mark_pre
        add rule bridge fs_port mark_pre meta mark set iifname map @port_mark
        add rule bridge fs_port mark_pre meta mark set iifname map @gone_mark
        flush chain bridge fs_port mark_fwd
        add rule bridge fs_port mark_fwd meta mark set 0
        add rule bridge fs_port mark_fwd meta mark set oifname map @port_mark
        add rule bridge fs_port mark_fwd meta mark set oifname map @gone_mark
        flush chain inet fs_sg sg_pre
        add rule inet fs_sg sg_pre ct direction original meta mark . ct mark and 0xffff0000 @revoked_rules drop
        add rule inet fs_sg sg_pre ct direction reply meta mark . ct mark and 0x0000ffff @revoked_rules drop
        add rule inet fs_sg sg_pre ct state established,related accept
        add rule inet fs_sg sg_pre meta mark vmap @egress
        flush chain inet fs_sg sg_fwd
        add rule inet fs_sg sg_fwd ct direction original meta mark . ct mark and 0x0000ffff @revoked_rules drop
        add rule inet fs_sg sg_fwd ct direction reply meta mark . ct mark and 0xffff0000 @revoked_rules drop
        add rule inet fs_sg sg_fwd meta nfproto ipv4 ct mark and 0x0000ffff . ct original ip saddr @revoked_remote4 drop
        add rule inet fs_sg sg_fwd meta nfproto ipv4 ct mark and 0xffff0000 . ct original ip daddr @revoked_remote4 drop
        add rule inet fs_sg sg_fwd meta nfproto ipv6 ct mark and 0x0000ffff . ct original ip6 saddr @revoked_remote6 drop
        add rule inet fs_sg sg_fwd meta nfproto ipv6 ct mark and 0xffff0000 . ct original ip6 daddr @revoked_remote6 drop
        add rule inet fs_sg sg_fwd ct state established,related accept
        add rule inet fs_sg sg_fwd ct state invalid drop
        add rule inet fs_sg sg_fwd meta mark vmap @ingress
    "#]].assert_eq(&render::shared_chains_upgrade_script());
}

#[test]
fn malformed_ports_are_refused_before_rendering() {
    let fw = Fake::new();
    fw.ensure_base().unwrap();
    let mut p = sample();
    p.rules[0].port_range = Some((30, 20));
    assert!(fw
        .upsert_port(&p)
        .unwrap_err()
        .to_string()
        .contains("tap3f1c2a4b-5d"));
    let mut p = sample();
    p.allowed_pairs.push(AllowedPair {
        ip: "0.0.0.0/0".parse().unwrap(),
        mac: None,
    });
    assert!(fw.upsert_port(&p).is_err());
    let mut p = sample();
    p.rules[0].remote = Remote::Cidr("fd00::/64".parse().unwrap());
    assert!(fw.upsert_port(&p).is_err());
    let mut p = sample();
    p.name = "tap drop\n".into();
    assert!(fw.upsert_port(&p).is_err());
    let mut p = sample();
    p.mark = 0;
    assert!(fw.upsert_port(&p).is_err());
    // The low half of a mark is the rules'.
    p.mark = (7 << 16) | 1;
    assert!(fw.upsert_port(&p).is_err());
    let mut p = sample();
    p.rules[0].ct_mark = 0x1_0000;
    assert!(fw.upsert_port(&p).is_err());
    p.mark = 0xffff << 16;
    p.rules[0].ct_mark = 0xffff;
    fw.upsert_port(&p).unwrap();
    fw.remove_port(&p.name).unwrap();
    assert_eq!(fw.transactions(), 3);
}

#[test]
fn fake_is_idempotent_revokes_and_drops_ports_without_port_security() {
    let fw = Fake::new();
    assert!(fw.upsert_port(&sample()).is_err(), "no base yet");
    fw.ensure_base().unwrap();
    fw.upsert_network("fsb-1", 3).unwrap();
    fw.upsert_remote_group(&RemoteGroup {
        id: "5e1f".into(),
        members: vec!["10.0.0.6/32".parse().unwrap()],
    })
    .unwrap();
    fw.upsert_port(&sample()).unwrap();
    let n = fw.transactions();
    fw.upsert_port(&sample()).unwrap();
    fw.ensure_base().unwrap();
    fw.upsert_network("fsb-1", 3).unwrap();
    assert_eq!(fw.transactions(), n, "unchanged state must apply nothing");
    let listed = fw.list_ports().unwrap();
    let m = 7 << 16;
    assert_eq!(
        listed[0].ct_marks,
        vec![m | 0x101, m | 0x102, m | 0x103, m | 0x104]
    );
    assert_eq!(listed[0].digest, sample().digest());
    assert!(fw.remove_remote_group("5e1f").is_err(), "in use");
    // 300 ports with the same groups: one chain pair.
    for i in 0..300u32 {
        let mut q = sample();
        q.name = format!("tapq{i}");
        q.mark = (100 + i) << 16;
        fw.upsert_port(&q).unwrap();
    }
    assert_eq!(fw.chains().len(), 1);
    for i in 0..300u32 {
        fw.remove_port(&format!("tapq{i}")).unwrap();
    }
    let mut p = sample();
    p.rules.remove(0);
    fw.upsert_port(&p).unwrap();
    assert_eq!(fw.revoked(), vec![m | 0x101]);
    assert_eq!(fw.chains().len(), 1, "the old set's chains are collected");
    // The rule comes back: its sessions are admitted again.
    fw.upsert_port(&sample()).unwrap();
    assert!(fw.revoked().is_empty());
    fw.upsert_port(&p).unwrap();
    p.port_security = false;
    fw.upsert_port(&p).unwrap();
    assert!(fw.list_ports().unwrap().is_empty());
    assert!(fw.chains().is_empty());
    assert_eq!(fw.revoked(), vec![m | 0x101]);
    assert!(fw.revoked_ports().contains(&m));
    fw.remove_port("tap3f1c2a4b-5d").unwrap();
    fw.remove_remote_group("5e1f").unwrap();
    fw.delete_all().unwrap();
    assert_eq!(fw.zone("fsb-1"), None);
}

#[test]
fn a_remote_group_member_change_is_one_element() {
    let n = |s: &str| s.parse::<hostlink::IpNet>().unwrap();
    let before: Vec<_> = (1..=500)
        .map(|i| n(&format!("10.0.{}.{}/32", i / 250, i % 250 + 1)))
        .collect();
    let mut after = before.clone();
    after.remove(7);
    after.push(n("10.9.9.9/32"));
    after.push(n("fd00::9/128"));
    check(
        render::group_delta_commands("g1", &before, &after),
        expect![[r#"
            {"delete":{"element":{"elem":["10.0.0.9"],"family":"inet","name":"rh4-g1","table":"fs_sg"}}}
            {"add":{"element":{"elem":["10.9.9.9"],"family":"inet","name":"rh4-g1","table":"fs_sg"}}}
            {"add":{"element":{"elem":["fd00::9"],"family":"inet","name":"rh6-g1","table":"fs_sg"}}}
        "#]],
    );
    assert!(render::group_delta_commands("g1", &after, &after).is_empty());
    // Contained prefixes go; host addresses are kept as they are.
    assert_eq!(
        render::merged([
            n("10.0.0.0/24"),
            n("10.0.0.5/32"),
            n("10.1.0.5/32"),
            n("10.1.0.5/32")
        ]),
        vec![n("10.0.0.0/24"), n("10.1.0.5/32")]
    );
}
