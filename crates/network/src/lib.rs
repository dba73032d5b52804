//! Networking v2.0, compatible with OpenStack Neutron: networks (with
//! provider segments), subnets, ports (IPAM, MACs, port security, allowed
//! address pairs, bindings), security groups and rules, routers and
//! floating IPs, quotas, tags, availability zones, IP availability and the
//! agents list — and the controller side of the node-agent contract
//! ([`netmodel::NetworkControl`]).
//!
//! Layers: `api` (HTTP handlers, request validation, Neutron's JSON,
//! filtering/sorting/paging) → `app` (allocation, policy on loaded
//! resources, the host state) → `store` (SQL). `policy` holds every rule of
//! this API in one place; `sim` is a simulated agent for tests (feature
//! `testing`, which only tests enable: it is not in the release binary).

pub mod api;
pub mod app;
pub mod policy;
#[cfg(any(test, feature = "testing"))]
pub mod sim;
pub mod store;

pub use app::{Config, Network, Quotas};
