//! Noticing devices as they appear: a netlink subscription to link events
//! (`RTNLGRP_LINK`) in the host namespace, so a tap is wired a few
//! milliseconds after the compute driver creates it, with a slow poll of
//! the link list as the fallback when the subscription cannot be made.
//!
//! The watcher only says *that* a watched name appeared or vanished; the
//! pass that follows reads the host as usual.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hostlink::{HostNet, Netns};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::NetlinkPayload;
use tokio::sync::Notify;

use crate::AbortOnDrop;

/// Names whose appearance (or disappearance) should trigger a pass.
#[derive(Debug, Default)]
pub struct Watched {
    /// Desired devices that are not wired yet.
    pub waiting: HashSet<String>,
    /// Desired devices that are wired.
    pub wired: HashSet<String>,
    /// Every name with an event since the current pass started: a device
    /// that appears while a pass runs (after it listed the links, before
    /// it marked the device as awaited) must not wait for the next
    /// periodic pass.
    pub seen: HashSet<String>,
}

impl Watched {
    /// Records a desired device as wired or still awaited.
    pub fn note(&mut self, device: &str, wired: bool) {
        let (to, from) = if wired {
            (&mut self.wired, &mut self.waiting)
        } else {
            (&mut self.waiting, &mut self.wired)
        };
        from.remove(device);
        if !to.contains(device) {
            to.insert(device.to_string());
        }
    }
}

/// Starts watching the host namespace. `trigger` is notified when a
/// watched name changes.
pub async fn spawn(
    ns: Netns,
    net: Arc<dyn HostNet>,
    watched: Arc<Mutex<Watched>>,
    trigger: Arc<Notify>,
    poll: Duration,
) -> AbortOnDrop {
    match subscribe(&ns).await {
        Ok((conn, handle, mut rx)) => {
            let task = tokio::spawn(async move {
                // The connection and its handle live as long as this task:
                // aborting the watcher closes the socket.
                let _conn = AbortOnDrop(tokio::spawn(conn));
                let _handle = handle;
                // The socket's buffer can overflow in a burst of link
                // events (ENOBUFS); the connection then ends. The agent's
                // periodic pass covers the gap; a watcher that stops says
                // so.
                while let Some((msg, _)) = rx.next().await {
                    let (name, gone) = match msg.payload {
                        // A device that is up and on a bridge is how the
                        // agent leaves a port: the events its own wiring
                        // raises need no second look (drift of a wired
                        // port is caught by the periodic pass).
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l))
                            if settled(&l) =>
                        {
                            continue
                        }
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                            (link_name(&l), false)
                        }
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                            (link_name(&l), true)
                        }
                        _ => continue,
                    };
                    let Some(name) = name else { continue };
                    tracing::trace!(name, gone, "link event");
                    let hit = {
                        let mut w = watched.lock().unwrap_or_else(|p| p.into_inner());
                        let hit = w.waiting.contains(&name) || (gone && w.wired.contains(&name));
                        w.seen.insert(name);
                        hit
                    };
                    if hit {
                        trigger.notify_one();
                    }
                }
                tracing::warn!("link events of {ns} ended");
            });
            AbortOnDrop(task)
        }
        Err(e) => {
            tracing::warn!("no link events in {ns} ({e}): polling every {poll:?}");
            AbortOnDrop(tokio::spawn(async move {
                let mut t = tokio::time::interval(poll);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    t.tick().await;
                    let Ok(links) = net.list_links(&ns).await else {
                        continue;
                    };
                    let present: HashSet<String> = links.into_iter().map(|l| l.name).collect();
                    let hit = {
                        let w = watched.lock().unwrap_or_else(|p| p.into_inner());
                        w.waiting.iter().any(|n| present.contains(n))
                            || w.wired.iter().any(|n| !present.contains(n))
                    };
                    if hit {
                        trigger.notify_one();
                    }
                }
            }))
        }
    }
}

/// Up and enslaved to a bridge.
fn settled(l: &netlink_packet_route::link::LinkMessage) -> bool {
    l.header
        .flags
        .contains(netlink_packet_route::link::LinkFlags::Up)
        && l.attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Controller(_)))
}

fn link_name(l: &netlink_packet_route::link::LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

type Events = futures::channel::mpsc::UnboundedReceiver<(
    rtnetlink::packet_core::NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

type Conn = rtnetlink::proto::Connection<RouteNetlinkMessage>;

/// Opens a netlink socket inside `ns` subscribed to link events.
async fn subscribe(ns: &Netns) -> std::io::Result<(Conn, rtnetlink::Handle, Events)> {
    use rtnetlink::sys::AsyncSocket;
    let rt = tokio::runtime::Handle::current();
    let (mut conn, handle, rx) = hostlink::netns::run_in_async(ns, move || {
        let _g = rt.enter();
        rtnetlink::new_connection()
    })
    .await
    .map_err(std::io::Error::other)??;
    // Bound with the RTMGRP_LINK group bit (1), as rtnetlink's own
    // monitoring example does; joining after an implicit bind does not
    // deliver events.
    conn.socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(0, 1))?;
    Ok((conn, handle, rx))
}
