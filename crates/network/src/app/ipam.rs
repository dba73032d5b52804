//! Address management: which address a port gets on a subnet. Runs inside
//! the port's write transaction, which holds the write lock; the
//! `UNIQUE (network_id, ip_address)` constraint is the last line should
//! two controllers sharing a database race anyway (the caller retries).

use std::net::IpAddr;

use api::Error;
use netmodel::Cidr;
use serde::{Deserialize, Serialize};

use super::addr::{self, Range};
use super::{db_err, fault, Tx};
use crate::store as db;

/// An allocation pool as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub start: String,
    pub end: String,
}

/// A route as stored and shown (subnet host routes, router routes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub destination: String,
    pub nexthop: String,
}

/// A subnet with its JSON columns parsed.
#[derive(Debug, Clone)]
pub struct SubnetInfo {
    pub row: db::subnet::Subnet,
    pub cidr: Cidr,
    pub gateway: Option<IpAddr>,
    pub pools: Vec<Range>,
    pub dns: Vec<IpAddr>,
    pub routes: Vec<(Cidr, IpAddr)>,
}

impl SubnetInfo {
    pub fn new(row: db::subnet::Subnet) -> SubnetInfo {
        let cidr = addr::parse_cidr(&row.cidr).unwrap_or(Cidr {
            addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            prefix: 32,
        });
        let gateway = row.gateway_ip.as_deref().and_then(addr::parse_ip);
        let pools = serde_json::from_str::<Vec<Pool>>(&row.allocation_pools)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                Some(Range {
                    start: addr::to_u128(addr::parse_ip(&p.start)?),
                    end: addr::to_u128(addr::parse_ip(&p.end)?),
                })
            })
            .collect();
        let dns = serde_json::from_str::<Vec<String>>(&row.dns_nameservers)
            .unwrap_or_default()
            .iter()
            .filter_map(|s| addr::parse_ip(s))
            .collect();
        let routes = serde_json::from_str::<Vec<Route>>(&row.host_routes)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                Some((
                    addr::parse_cidr(&r.destination)?,
                    addr::parse_ip(&r.nexthop)?,
                ))
            })
            .collect();
        SubnetInfo {
            row,
            cidr,
            gateway,
            pools,
            dns,
            routes,
        }
    }

    pub fn is_v6(&self) -> bool {
        self.cidr.addr.is_ipv6()
    }

    /// SLAAC and DHCPv6-stateless subnets: addresses come from the MAC.
    pub fn auto_address(&self) -> bool {
        matches!(
            self.row.ipv6_address_mode.as_deref(),
            Some("slaac") | Some("dhcpv6-stateless")
        )
    }

    /// Total addresses in the pools (saturating).
    pub fn pool_size(&self) -> u128 {
        self.pools.iter().fold(0u128, |acc, r| {
            acc.saturating_add(addr::count(r.start, r.end))
        })
    }

    /// Whether `ip` may be a port's address here: inside the CIDR and, for
    /// IPv4, neither the network nor the broadcast address.
    pub fn valid_host(&self, ip: IpAddr) -> bool {
        if !addr::contains(&self.cidr, ip) {
            return false;
        }
        if self.is_v6() {
            return addr::to_u128(ip) != addr::first(&self.cidr) || self.cidr.prefix >= 127;
        }
        let v = addr::to_u128(ip);
        self.cidr.prefix >= 31 || (v != addr::first(&self.cidr) && v != addr::last(&self.cidr))
    }
}

/// The subnets of a network, parsed.
pub async fn subnets_of(tx: &mut Tx, network_id: &str) -> Result<Vec<SubnetInfo>, Error> {
    Ok(db::subnet::by_network(tx.c(), network_id)
        .await
        .map_err(db_err)?
        .into_iter()
        .map(SubnetInfo::new)
        .collect())
}

/// Takes an address on `subnet` for `port_id`: `want` if given (it must be
/// a free, valid host address of the subnet), the EUI-64 address on
/// auto-address subnets, else the lowest free address of the pools.
/// `Ok(None)` when the pools are exhausted.
pub async fn allocate(
    tx: &mut Tx,
    port_id: &str,
    mac: &str,
    subnet: &SubnetInfo,
    want: Option<IpAddr>,
) -> Result<Option<IpAddr>, Error> {
    let net = subnet.row.network_id.clone();
    let ip = match want {
        Some(ip) => {
            if !subnet.valid_host(ip) {
                return Err(fault::bad(
                    "InvalidIpForSubnet",
                    format!("IP address {ip} is not a valid IP for the specified subnet."),
                ));
            }
            if db::port::allocation_by_ip(tx.c(), &net, &ip.to_string())
                .await
                .map_err(db_err)?
                .is_some()
            {
                return Err(fault::ip_already_allocated(&ip.to_string(), &subnet.row.id));
            }
            ip
        }
        None if subnet.auto_address() => {
            let Some(m) = addr::parse_mac(mac) else {
                return Ok(None);
            };
            match addr::eui64(&subnet.cidr, &m) {
                Some(ip) => ip,
                None => return Ok(None),
            }
        }
        None => match lowest_free(tx, subnet).await? {
            Some(v) => addr::from_u128(v, subnet.is_v6()),
            None => return Ok(None),
        },
    };
    db::port::allocate(
        tx.c(),
        &db::port::Allocation {
            port_id: port_id.to_string(),
            subnet_id: subnet.row.id.clone(),
            network_id: net,
            ip_address: ip.to_string(),
        },
        &addr::sort_key(addr::to_u128(ip)),
    )
    .await
    .map_err(db_err)?;
    Ok(Some(ip))
}

/// The lowest free address of the subnet's pools, found by counting the
/// allocations in ranges (an index on `(subnet_id, ip_key)`), never by
/// reading them: two counts when the allocations fill the start of a pool,
/// as they do until addresses are released; a binary search over the pool
/// otherwise.
async fn lowest_free(tx: &mut Tx, subnet: &SubnetInfo) -> Result<Option<u128>, Error> {
    let sid = subnet.row.id.as_str();
    let mut pools = subnet.pools.clone();
    pools.sort();
    for p in pools {
        // Allocated addresses in start..=start+len-1.
        let taken = async |tx: &mut Tx, len: u128| -> Result<u128, Error> {
            let hi = p.start.saturating_add(len - 1).min(p.end);
            db::port::count_allocated(tx.c(), sid, &addr::sort_key(p.start), &addr::sort_key(hi))
                .await
                .map(u128::from)
                .map_err(db_err)
        };
        let size = addr::count(p.start, p.end);
        let total = taken(tx, size).await?;
        if total >= size {
            continue;
        }
        if total == 0 {
            return Ok(Some(p.start));
        }
        if taken(tx, total).await? == total {
            // The first `total` addresses are the taken ones.
            return Ok(Some(p.start + total));
        }
        // The shortest full prefix ends before `total`: find the first
        // prefix that is not full; its last address is free.
        let (mut lo, mut hi) = (1u128, total);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if taken(tx, mid).await? < mid {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        return Ok(Some(p.start + lo - 1));
    }
    Ok(None)
}

/// A fixed-IP request of a port: a subnet, an address, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedIpRequest {
    pub subnet_id: Option<String>,
    pub ip_address: Option<IpAddr>,
}

/// Resolves each request to its subnet (checking that it is on the
/// network and consistent with the address).
pub fn resolve<'a>(
    network_id: &str,
    subnets: &'a [SubnetInfo],
    reqs: &[FixedIpRequest],
) -> Result<Vec<(&'a SubnetInfo, Option<IpAddr>)>, Error> {
    let mut out = Vec::new();
    for r in reqs {
        let subnet = match (&r.subnet_id, r.ip_address) {
            (Some(sid), ip) => {
                let s = subnets.iter().find(|s| s.row.id == *sid).ok_or_else(|| {
                    fault::invalid_input(format!(
                        "Failed to create port on network {network_id}, because fixed_ips included invalid subnet {sid}"
                    ))
                })?;
                if let Some(ip) = ip {
                    if !addr::contains(&s.cidr, ip) {
                        return Err(fault::bad(
                            "InvalidIpForSubnet",
                            format!("IP address {ip} is not a valid IP for the specified subnet."),
                        ));
                    }
                }
                s
            }
            (None, Some(ip)) => subnets
                .iter()
                .find(|s| addr::contains(&s.cidr, ip))
                .ok_or_else(|| {
                    fault::bad(
                        "InvalidIpForNetwork",
                        format!(
                            "IP address {ip} is not a valid IP for any of the subnets on the specified network."
                        ),
                    )
                })?,
            (None, None) => {
                return Err(fault::bad_request(
                    "Invalid input for fixed_ips. Reason: a fixed IP needs a subnet_id or an ip_address.",
                ))
            }
        };
        out.push((subnet, r.ip_address));
    }
    Ok(out)
}
