//! STUB
#![allow(missing_docs, dead_code, unused_variables)]
#[derive(Debug, thiserror::Error)]
pub enum NetworkError { #[error("x")] X }
pub mod netns {
    use std::path::{Path, PathBuf};
    pub fn create(dir: &Path, name: &str) -> Result<PathBuf, super::NetworkError> { todo!() }
    pub fn remove(p: &Path) -> Result<(), super::NetworkError> { todo!() }
}
pub mod cni {
    use std::path::PathBuf;
    #[derive(Debug, Clone)]
    pub struct PortMapping { pub host_port: u16, pub container_port: u16, pub protocol: String, pub host_ip: String }
    #[derive(Debug, Clone)]
    pub struct Attachment { pub container_id: String, pub netns: PathBuf, pub ifname: String, pub pod_name: String, pub pod_namespace: String, pub pod_uid: String, pub port_mappings: Vec<PortMapping> }
    pub struct CniResult { pub ips: Vec<std::net::IpAddr> }
    pub struct Cni;
    impl Cni {
        pub fn new(a: PathBuf, b: Vec<PathBuf>, c: PathBuf) -> Self { Self }
        pub fn add(&self, a: &Attachment) -> Result<CniResult, super::NetworkError> { todo!() }
        pub fn del(&self, a: &Attachment) -> Result<(), super::NetworkError> { todo!() }
        pub fn check_config(&self) -> Result<(), String> { Ok(()) }
    }
}
