//! Snapshot tests of the rendered nft JSON (one command per line), and
//! the fake's behaviour. No root needed. `UPDATE_EXPECT=1 cargo test`
//! refreshes the snapshots after an intended change.

use expect_test::{expect, Expect};
use nft::render::{self, port_commands, router_commands};
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
        mark: 7,
        mac: "fa:16:3e:00:0a:01".parse().unwrap(),
        fixed_ips: vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
        allowed_pairs: vec![
            AllowedPair {
                ip: "10.0.1.0/24".parse().unwrap(),
                mac: Some("fa:16:3e:00:0b:01".parse().unwrap()),
            },
            // Inside the prefix above: merged away, nft refuses overlaps.
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

#[test]
fn port_renders_to_the_expected_transaction() {
    check(
        port_commands(&sample(), None),
        expect![[r#"
            {"add":{"set":{"family":"inet","flags":["interval"],"name":"rg4-5e1f","table":"fs_sg","type":"ipv4_addr"}}}
            {"add":{"chain":{"family":"inet","name":"eg-tap3f1c2a4b-5d","table":"fs_sg"}}}
            {"flush":{"chain":{"family":"inet","name":"eg-tap3f1c2a4b-5d","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"eg-tap3f1c2a4b-5d","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv4"}},{"match":{"left":{"payload":{"field":"sport","protocol":"udp"}},"op":"==","right":68}},{"match":{"left":{"payload":{"field":"dport","protocol":"udp"}},"op":"==","right":67}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"eg-tap3f1c2a4b-5d","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv6"}},{"match":{"left":{"payload":{"field":"sport","protocol":"udp"}},"op":"==","right":546}},{"match":{"left":{"payload":{"field":"dport","protocol":"udp"}},"op":"==","right":547}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"eg-tap3f1c2a4b-5d","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":58}},{"match":{"left":{"payload":{"field":"type","protocol":"icmpv6"}},"op":"==","right":{"set":["nd-router-solicit","nd-neighbor-solicit","nd-neighbor-advert","mld-listener-report","mld2-listener-report"]}}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"eg-tap3f1c2a4b-5d","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":17}},{"match":{"left":{"payload":{"field":"sport","protocol":"udp"}},"op":"==","right":{"set":[67,547]}}},{"drop":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"eg-tap3f1c2a4b-5d","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv4"}},{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":112}},{"mangle":{"key":{"ct":{"key":"mark"}},"value":260}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"eg-tap3f1c2a4b-5d","comment":"fs-digest:4f9ef54e20ff627c","expr":[{"drop":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"chain":{"family":"inet","name":"in-tap3f1c2a4b-5d","table":"fs_sg"}}}
            {"flush":{"chain":{"family":"inet","name":"in-tap3f1c2a4b-5d","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-tap3f1c2a4b-5d","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv4"}},{"match":{"left":{"payload":{"field":"sport","protocol":"udp"}},"op":"==","right":67}},{"match":{"left":{"payload":{"field":"dport","protocol":"udp"}},"op":"==","right":68}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-tap3f1c2a4b-5d","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv6"}},{"match":{"left":{"payload":{"field":"sport","protocol":"udp"}},"op":"==","right":547}},{"match":{"left":{"payload":{"field":"dport","protocol":"udp"}},"op":"==","right":546}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-tap3f1c2a4b-5d","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":58}},{"match":{"left":{"payload":{"field":"type","protocol":"icmpv6"}},"op":"==","right":{"set":["nd-router-advert","nd-neighbor-solicit","nd-neighbor-advert","mld-listener-query"]}}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-tap3f1c2a4b-5d","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv4"}},{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":6}},{"match":{"left":{"payload":{"field":"dport","protocol":"th"}},"op":"==","right":{"range":[22,23]}}},{"match":{"left":{"payload":{"field":"saddr","protocol":"ip"}},"op":"==","right":{"prefix":{"addr":"192.0.2.0","len":24}}}},{"mangle":{"key":{"ct":{"key":"mark"}},"value":257}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-tap3f1c2a4b-5d","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv4"}},{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":1}},{"match":{"left":{"payload":{"field":"type","protocol":"icmp"}},"op":"==","right":8}},{"match":{"left":{"payload":{"field":"saddr","protocol":"ip"}},"op":"==","right":"@rg4-5e1f"}},{"mangle":{"key":{"ct":{"key":"mark"}},"value":258}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-tap3f1c2a4b-5d","expr":[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv6"}},{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":58}},{"mangle":{"key":{"ct":{"key":"mark"}},"value":259}},{"accept":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"rule":{"chain":"in-tap3f1c2a4b-5d","comment":"fs-digest:4f9ef54e20ff627c","expr":[{"drop":null}],"family":"inet","table":"fs_sg"}}}
            {"add":{"chain":{"family":"bridge","name":"as-tap3f1c2a4b-5d","table":"fs_port"}}}
            {"flush":{"chain":{"family":"bridge","name":"as-tap3f1c2a4b-5d","table":"fs_port"}}}
            {"add":{"rule":{"chain":"as-tap3f1c2a4b-5d","expr":[{"match":{"left":{"payload":{"field":"saddr","protocol":"ether"}},"op":"!=","right":{"set":["fa:16:3e:00:0a:01","fa:16:3e:00:0b:01"]}}},{"drop":null}],"family":"bridge","table":"fs_port"}}}
            {"add":{"rule":{"chain":"as-tap3f1c2a4b-5d","expr":[{"match":{"left":{"payload":{"field":"saddr ether","protocol":"arp"}},"op":"!=","right":{"set":["fa:16:3e:00:0a:01","fa:16:3e:00:0b:01"]}}},{"drop":null}],"family":"bridge","table":"fs_port"}}}
            {"add":{"rule":{"chain":"as-tap3f1c2a4b-5d","expr":[{"match":{"left":{"payload":{"field":"saddr ip","protocol":"arp"}},"op":"!=","right":{"set":["10.0.0.5",{"prefix":{"addr":"10.0.1.0","len":24}}]}}},{"drop":null}],"family":"bridge","table":"fs_port"}}}
            {"add":{"rule":{"chain":"as-tap3f1c2a4b-5d","expr":[{"match":{"left":{"payload":{"field":"type","protocol":"ether"}},"op":"==","right":"arp"}},{"accept":null}],"family":"bridge","table":"fs_port"}}}
            {"add":{"rule":{"chain":"as-tap3f1c2a4b-5d","expr":[{"match":{"left":{"payload":{"field":"sport","protocol":"udp"}},"op":"==","right":{"set":[67,547]}}},{"drop":null}],"family":"bridge","table":"fs_port"}}}
            {"add":{"rule":{"chain":"as-tap3f1c2a4b-5d","expr":[{"match":{"left":{"payload":{"field":"saddr","protocol":"ip"}},"op":"==","right":"0.0.0.0"}},{"match":{"left":{"payload":{"field":"daddr","protocol":"ip"}},"op":"==","right":"255.255.255.255"}},{"match":{"left":{"payload":{"field":"sport","protocol":"udp"}},"op":"==","right":68}},{"match":{"left":{"payload":{"field":"dport","protocol":"udp"}},"op":"==","right":67}},{"accept":null}],"family":"bridge","table":"fs_port"}}}
            {"add":{"rule":{"chain":"as-tap3f1c2a4b-5d","expr":[{"match":{"left":{"payload":{"field":"saddr","protocol":"ip"}},"op":"==","right":{"set":["10.0.0.5",{"prefix":{"addr":"10.0.1.0","len":24}}]}}},{"accept":null}],"family":"bridge","table":"fs_port"}}}
            {"add":{"rule":{"chain":"as-tap3f1c2a4b-5d","expr":[{"match":{"left":{"payload":{"field":"saddr","protocol":"ip6"}},"op":"==","right":"::"}},{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":58}},{"accept":null}],"family":"bridge","table":"fs_port"}}}
            {"add":{"rule":{"chain":"as-tap3f1c2a4b-5d","expr":[{"match":{"left":{"payload":{"field":"saddr","protocol":"ip6"}},"op":"==","right":{"set":["fd00::5","fe80::f816:3eff:fe00:a01","fe80::f816:3eff:fe00:b01"]}}},{"accept":null}],"family":"bridge","table":"fs_port"}}}
            {"add":{"rule":{"chain":"as-tap3f1c2a4b-5d","expr":[{"drop":null}],"family":"bridge","table":"fs_port"}}}
            {"add":{"element":{"elem":[["tap3f1c2a4b-5d",7]],"family":"bridge","name":"port_mark","table":"fs_port"}}}
            {"add":{"element":{"elem":[["tap3f1c2a4b-5d",{"jump":{"target":"as-tap3f1c2a4b-5d"}}]],"family":"bridge","name":"antispoof","table":"fs_port"}}}
            {"add":{"element":{"elem":[[7,{"jump":{"target":"eg-tap3f1c2a4b-5d"}}]],"family":"inet","name":"egress","table":"fs_sg"}}}
            {"add":{"element":{"elem":[[7,{"jump":{"target":"in-tap3f1c2a4b-5d"}}]],"family":"inet","name":"ingress","table":"fs_sg"}}}
        "#]],
    );
}

#[test]
fn changed_port_replaces_map_entries_and_revokes_dropped_rules() {
    let mut p = sample();
    p.rules.truncate(1);
    let cmds = port_commands(&p, Some((6, &[0x101, 0x102, 0x103])));
    let text = lines(cmds);
    assert!(
        text.contains(
            r#"{"delete":{"element":{"elem":[6],"family":"inet","name":"egress","table":"fs_sg"}}}"#
        ),
        "{text}"
    );
    assert!(text.ends_with("{\"add\":{\"element\":{\"elem\":[{\"elem\":{\"timeout\":432000,\"val\":258}},{\"elem\":{\"timeout\":432000,\"val\":259}}],\"family\":\"inet\",\"name\":\"revoked\",\"table\":\"fs_sg\"}}}\n"), "{text}");
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
          map antispoof { type ifname : verdict; }
          chain antispoof_pre { type filter hook prerouting priority -350; policy accept; iifname vmap @antispoof; }
          chain mark_pre { type filter hook prerouting priority -300; policy accept; meta mark set iifname map @port_mark; }
          chain mark_fwd { type filter hook forward priority -200; policy accept; meta mark set 0; meta mark set oifname map @port_mark; }
        }
        table inet fs_sg {
          set revoked { type mark; flags timeout; }
          map zones {
            typeof iifname : ct zone
          }
          map egress { type mark : verdict; }
          map ingress { type mark : verdict; }
          chain zone_raw { type filter hook prerouting priority raw; policy accept; ct zone set iifname map @zones; }
          chain sg_pre { type filter hook prerouting priority 0; policy accept; ct state established,related accept; meta mark vmap @egress; }
          chain sg_fwd { type filter hook forward priority 0; policy accept; ct mark @revoked drop; ct state established,related accept; ct state invalid drop; meta mark vmap @ingress; }
        }
    "#]]
    .assert_eq(&render::base_script());
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
    assert_eq!(fw.transactions(), 1);
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
    assert_eq!(listed[0].ct_marks, vec![0x101, 0x102, 0x103, 0x104]);
    assert_eq!(listed[0].digest, sample().digest());
    assert!(fw.remove_remote_group("5e1f").is_err(), "in use");
    let mut p = sample();
    p.rules.remove(0);
    fw.upsert_port(&p).unwrap();
    assert_eq!(fw.revoked(), vec![0x101]);
    p.port_security = false;
    fw.upsert_port(&p).unwrap();
    assert!(fw.list_ports().unwrap().is_empty());
    assert_eq!(fw.revoked(), vec![0x101, 0x102, 0x103, 0x104]);
    fw.remove_port("tap3f1c2a4b-5d").unwrap();
    fw.remove_remote_group("5e1f").unwrap();
    fw.delete_all().unwrap();
    assert_eq!(fw.zone("fsb-1"), None);
}
