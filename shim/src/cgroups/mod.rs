//! STUB
#![allow(missing_docs, dead_code, unused_variables)]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use serde::{Deserialize, Serialize};
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources { pub cpu_period: i64, pub cpu_quota: i64, pub cpu_shares: i64, pub memory_limit: i64, pub memory_swap_limit: i64, pub cpuset_cpus: String, pub cpuset_mems: String, pub pids_limit: i64, pub unified: HashMap<String, String>, pub hugepage_limits: Vec<(String, u64)> }
#[derive(Debug, thiserror::Error)]
pub enum CgroupError { #[error("x")] X }
pub struct Stats { pub cpu_usage_ns: u64, pub memory_usage: u64, pub working_set: u64, pub rss: u64, pub page_faults: u64, pub major_page_faults: u64, pub memory_limit: Option<u64>, pub pids_current: u64 }
#[derive(Clone, Debug)]
pub struct Cgroups;
impl Cgroups {
    pub fn detect(p: &Path) -> Result<Self, CgroupError> { Ok(Self) }
    pub fn driver_name(&self) -> &'static str { "x" }
    pub fn create(&self, p: &str, r: &Resources) -> Result<(), CgroupError> { Ok(()) }
    pub fn update(&self, p: &str, r: &Resources) -> Result<(), CgroupError> { Ok(()) }
    pub fn remove(&self, p: &str) -> Result<(), CgroupError> { Ok(()) }
    pub fn procs_files(&self, p: &str) -> Vec<PathBuf> { vec![] }
    pub fn oom_killed(&self, p: &str) -> bool { false }
    pub fn stats(&self, p: &str) -> Result<Stats, CgroupError> { todo!() }
}
