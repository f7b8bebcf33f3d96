//! Pod networking: persistent network namespaces ([`netns`]), their sysctls ([`sysctl`]) and a
//! CNI client ([`cni`]) that
//! runs the standard plugins per the CNI spec (0.4.0 / 1.0.0) to attach and detach them.
//!
//! The flow for a pod sandbox: [`netns::create`] a namespace file, [`Cni::add`] an
//! [`Attachment`] (which caches the network config and result so [`Cni::del`] works after a
//! daemon restart), hand the namespace path to runners; on teardown [`Cni::del`] then
//! [`netns::remove`]. Both `del` and `remove` are idempotent.

pub mod cni;
mod error;
pub mod netns;
pub mod stats;
pub mod sysctl;

pub use cni::{
    Attachment, Cni, CniConfig, CniResult, Interface, IpConfig, NetworkList, PortMapping, Protocol,
};
pub use error::NetworkError;

/// Result of network operations.
pub type Result<T> = std::result::Result<T, NetworkError>;

#[cfg(test)]
mod tests;
