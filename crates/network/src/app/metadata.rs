//! Metadata for a guest, found by the network its request arrived on and
//! its source address — never by anything the guest sends. Until compute
//! exists the port is the instance: `uuid` is its `device_id` (or its own
//! id), and `network_data.json` describes that one port in the shape nova
//! builds (`nova/virt/netutils.py::get_network_metadata`).

use base64::Engine;
use serde_json::{json, Value};

use api::Error;
use netmodel::{MetadataAnswer, MetadataCaller};

use super::addr;
use super::ipam::SubnetInfo;
use super::{db_err, Network};
use crate::store as db;

impl Network {
    pub async fn metadata_for(
        &self,
        caller: &MetadataCaller,
    ) -> Result<Option<MetadataAnswer>, Error> {
        let Some(alloc) =
            db::port::allocation_by_ip(&self.pool, &caller.network_id, &caller.ip.to_string())
                .await
                .map_err(db_err)?
        else {
            return Ok(None);
        };
        let Some(port) = db::port::get(&self.pool, &alloc.port_id)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        // Only instances get metadata: not routers, DHCP or floating IPs.
        if super::port::is_network_owned(&port.device_owner) {
            return Ok(None);
        }
        let Some(net) = db::network::get(&self.pool, &port.network_id)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let allocs = db::port::allocations_of_port(&self.pool, &port.id)
            .await
            .map_err(db_err)?;
        let subnets: Vec<SubnetInfo> = db::subnet::by_network(&self.pool, &net.id)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(SubnetInfo::new)
            .collect();
        let hostname = super::port::hostname(&port.dns_name, Some(&caller.ip.to_string()));
        let uuid = if port.device_id.is_empty() {
            port.id.clone()
        } else {
            port.device_id.clone()
        };
        let mut seed_bytes = vec![0u8; 512];
        rand::Rng::fill(&mut rand::thread_rng(), &mut seed_bytes[..]);
        let meta = json!({
            "uuid": uuid,
            "name": if port.name.is_empty() { hostname.clone() } else { port.name.clone() },
            "hostname": hostname,
            "availability_zone": super::network::AVAILABILITY_ZONE,
            "project_id": port.project_id,
            "launch_index": 0,
            "public_keys": {},
            "keys": [],
            "meta": {},
            "devices": [],
            "random_seed": base64::engine::general_purpose::STANDARD.encode(&seed_bytes),
        });
        let link_id = format!("tap{}", port.id.chars().take(11).collect::<String>());
        let dhcp_any = subnets.iter().any(|s| s.row.enable_dhcp);
        let link = json!({
            "id": link_id,
            "vif_id": port.id,
            "type": "bridge",
            "mtu": if dhcp_any { Value::Null } else { json!(net.mtu) },
            "ethernet_mac_address": port.mac_address,
        });
        let mut networks = Vec::new();
        let mut services: Vec<Value> = Vec::new();
        let mut n = 0;
        for v6 in [false, true] {
            // Nova describes the first subnet of each IP version that gives
            // the port an address.
            let Some((s, ip)) = subnets.iter().filter(|s| s.is_v6() == v6).find_map(|s| {
                allocs
                    .iter()
                    .find(|a| a.subnet_id == s.row.id)
                    .and_then(|a| addr::parse_ip(&a.ip_address))
                    .map(|ip| (s, ip))
            }) else {
                continue;
            };
            let dns: Vec<Value> = s
                .dns
                .iter()
                .map(|d| json!({"type": "dns", "address": d.to_string()}))
                .collect();
            for d in &dns {
                if !services.contains(d) {
                    services.push(d.clone());
                }
            }
            let version = if v6 { 6 } else { 4 };
            let entry = if s.row.enable_dhcp && s.row.ipv6_address_mode.is_none() {
                json!({
                    "id": format!("network{n}"),
                    "type": format!("ipv{version}_dhcp"),
                    "link": link_id,
                    "network_id": net.id,
                })
            } else {
                let kind = match &s.row.ipv6_address_mode {
                    Some(m) => format!("ipv{version}_{m}"),
                    None => format!("ipv{version}"),
                };
                let (any, mut routes) = (if v6 { "::" } else { "0.0.0.0" }, Vec::new());
                if let Some(g) = s.gateway {
                    routes.push(json!({"network": any, "netmask": any, "gateway": g.to_string()}));
                }
                for (d, nh) in &s.routes {
                    routes.push(json!({
                        "network": addr::normalize(d).addr.to_string(),
                        "netmask": addr::netmask(d).to_string(),
                        "gateway": nh.to_string(),
                    }));
                }
                json!({
                    "id": format!("network{n}"),
                    "type": kind,
                    "link": link_id,
                    "ip_address": ip.to_string(),
                    "netmask": addr::netmask(&s.cidr).to_string(),
                    "routes": routes,
                    "network_id": net.id,
                    "services": dns,
                })
            };
            networks.push(entry);
            n += 1;
        }
        let network_data = json!({
            "links": [link],
            "networks": networks,
            "services": services,
        });
        Ok(Some(MetadataAnswer {
            openstack: vec![
                ("meta_data.json".into(), meta),
                ("network_data.json".into(), network_data),
            ],
            user_data: None,
        }))
    }
}
