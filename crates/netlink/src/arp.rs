//! Gratuitous ARP: telling the neighbours on a link that an IPv4 address
//! is (now) at a MAC, so they need not wait for their cache entry to go
//! stale. What `arping -U` sends, and what Neutron's L3 agent sends when a
//! router's gateway leg gains an address.
//!
//! The frame is built here ([`gratuitous_request`], pure) and sent, by
//! [`crate::Kernel`]'s [`crate::HostNet::announce_ipv4`], on an
//! `AF_PACKET` socket bound to the link, opened by `pnet_datalink` (the
//! socket address setup needs `unsafe`, which this workspace keeps out of
//! its own code). The socket belongs to the namespace of the thread that
//! opens it, so the sending runs on a thread that entered the link's
//! namespace.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use pnet_datalink::{Channel, Config};

use crate::{Error, MacAddr, Netns, Result};

/// Length of an ARP frame over Ethernet without padding: a 14-byte
/// Ethernet header and a 28-byte ARP body.
pub const FRAME_LEN: usize = 42;

/// The gratuitous ARP request announcing that `ip` is at `mac`: from
/// `mac` to the broadcast address, ethertype ARP (0x0806); hardware type
/// Ethernet (1), protocol IPv4 (0x0800), lengths 6 and 4, operation
/// request (1); sender `mac`/`ip`, target MAC zero, target IP `ip` again
/// (RFC 5227 §3 prefers a request to a reply: every stack accepts it).
pub fn gratuitous_request(mac: MacAddr, ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    // Ethernet: destination, source, ethertype.
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // ARP: htype, ptype, hlen, plen, op.
    f[14..16].copy_from_slice(&1u16.to_be_bytes());
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes());
    // Sender hardware and protocol address; target hardware address
    // (zero, left as is) and protocol address.
    f[22..28].copy_from_slice(&mac.0);
    f[28..32].copy_from_slice(&ip.octets());
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends `frames` on `link` of the calling thread's namespace, `rounds`
/// times, `interval` apart (no wait after the last round). Blocking: the
/// caller is a dedicated thread that entered `netns`, which is only named
/// in errors.
pub(crate) fn send(
    netns: &Netns,
    link: &str,
    frames: &[[u8; FRAME_LEN]],
    rounds: u32,
    interval: Duration,
) -> Result<()> {
    let os = |op: &'static str| {
        let object = format!("link {link} in {netns}");
        move |source: io::Error| Error::Os { op, object, source }
    };
    // getifaddrs(3) lists the links of the calling thread's namespace.
    let iface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == link)
        .ok_or_else(|| Error::NoSuchLink {
            netns: netns.clone(),
            link: link.to_string(),
        })?;
    if frames.is_empty() || rounds == 0 {
        return Ok(());
    }
    let config = Config {
        // Nothing is read from the socket.
        read_buffer_size: 64,
        write_buffer_size: FRAME_LEN,
        write_timeout: Some(Duration::from_secs(1)),
        // pnet's default, promiscuous mode, would flip the link's
        // promiscuity (and log it) for nothing.
        promiscuous: false,
        ..Config::default()
    };
    let mut tx = match pnet_datalink::channel(&iface, config) {
        Ok(Channel::Ethernet(tx, _rx)) => tx,
        Ok(_) => {
            return Err(os("open packet socket on")(io::Error::other(
                "not an Ethernet channel",
            )))
        }
        Err(e) => return Err(os("open packet socket on")(e)),
    };
    for round in 0..rounds {
        if round > 0 {
            std::thread::sleep(interval);
        }
        for f in frames {
            tx.send_to(f, None)
                .unwrap_or_else(|| Err(io::Error::other("frame larger than the send buffer")))
                .map_err(os("send gratuitous ARP on"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_request_has_the_bytes_of_arping_u() {
        let mac = MacAddr([0xfa, 0x16, 0x3e, 0x00, 0x00, 0xc8]);
        let f = gratuitous_request(mac, Ipv4Addr::new(203, 0, 113, 20));
        #[rustfmt::skip]
        let want: [u8; FRAME_LEN] = [
            // Ethernet: broadcast destination, source, ethertype ARP.
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xfa, 0x16, 0x3e, 0x00, 0x00, 0xc8,
            0x08, 0x06,
            // htype 1, ptype IPv4, hlen 6, plen 4, op 1 (request).
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            // Sender MAC and IP.
            0xfa, 0x16, 0x3e, 0x00, 0x00, 0xc8,
            203, 0, 113, 20,
            // Target MAC zero, target IP the same address.
            0, 0, 0, 0, 0, 0,
            203, 0, 113, 20,
        ];
        assert_eq!(f, want);
    }
}
