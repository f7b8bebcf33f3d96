//! STUB (replaced by the images branch)
#![allow(missing_docs, dead_code, unused_variables)]
use std::path::{Path, PathBuf};
use serde::{Deserialize, Serialize};
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RegistryConfig { pub insecure: Vec<String> }
#[derive(Debug, Clone, Default)]
pub struct PullAuth { pub username: String, pub password: String, pub auth: String, pub identity_token: String, pub registry_token: String }
#[derive(Debug, thiserror::Error)]
pub enum ImageError { #[error("nf {reference}")] NotFound { reference: String }, #[error("x")] InvalidReference { reference: String }, #[error("x")] Unauthorized { reference: String }, #[error("x")] DigestMismatch { digest: String }, #[error("x")] HostileLayer { entry: String }, #[error("x")] TooLarge { what: String }, #[error("x")] UnsupportedMediaType { media_type: String }, #[error("x")] NoMatchingPlatform { offered: String }, #[error("x")] Other }
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig { pub entrypoint: Vec<String>, pub cmd: Vec<String>, pub env: Vec<String>, pub working_dir: String, pub user: String }
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageRecord { pub id: String, pub repo_tags: Vec<String>, pub repo_digests: Vec<String>, pub size: u64, pub config: ImageConfig, pub rootfs: PathBuf, pub wasm: PathBuf }
impl ImageRecord { pub fn wasm_host_path(&self) -> PathBuf { self.wasm.clone() } pub fn is_http(&self) -> bool { false } }
#[derive(Clone)]
pub struct ImageStore;
impl ImageStore {
    pub fn open(p: &Path) -> Result<Self, ImageError> { Ok(Self) }
    pub async fn get(&self, r: &str) -> Result<ImageRecord, ImageError> { todo!() }
    pub async fn list(&self) -> Result<Vec<ImageRecord>, ImageError> { todo!() }
    pub async fn remove(&self, r: &str) -> Result<(), ImageError> { todo!() }
    pub async fn pull(&self, r: &str, a: &PullAuth, c: &RegistryConfig) -> Result<ImageRecord, ImageError> { todo!() }
    pub async fn fs_usage(&self) -> Result<(u64, u64), ImageError> { todo!() }
    pub async fn import_layout(&self, p: &Path, n: Option<&str>) -> Result<ImageRecord, ImageError> { todo!() }
    pub async fn push_wasm(f: &Path, r: &str, a: &PullAuth, c: &RegistryConfig) -> Result<String, ImageError> { todo!() }
}
