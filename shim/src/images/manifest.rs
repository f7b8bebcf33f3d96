//! The OCI / Docker manifest, index and config JSON the store reads, the media types it
//! recognises, and platform selection from an image index (`wasi/wasm` first, then the
//! node's own `linux/<arch>`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{ImageError, Result};

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Config of the OCI Wasm artifact (CNCF wasm-oci / wasm-pkg-tools).
pub const MT_WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Config of the older wasm-to-oci artifact.
pub const MT_WASM_CONFIG_V1: &str = "application/vnd.wasm.config.v1+json";
/// The single layer of the OCI Wasm artifact.
pub const MT_WASM_LAYER: &str = "application/wasm";
/// Layer of the older wasm-to-oci artifact.
pub const MT_WASM_LAYER_V1: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// Media types accepted when fetching a manifest by tag or digest.
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    MT_OCI_MANIFEST,
    MT_OCI_INDEX,
    MT_DOCKER_MANIFEST,
    MT_DOCKER_LIST,
];

/// Annotation naming an image in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's full-name annotation in exported layouts.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// The platform of an index entry or image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSpec {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest or an image index / manifest list (one struct; see [`Manifest::is_index`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ImageError::malformed(what, e))?;
        if m.schema_version != 2 {
            return Err(ImageError::malformed(
                what,
                format!("unsupported schemaVersion {}", m.schema_version),
            ));
        }
        Ok(m)
    }

    /// Whether this is an index / manifest list rather than an image manifest.
    pub fn is_index(&self) -> bool {
        matches!(
            self.media_type.as_deref(),
            Some(MT_OCI_INDEX | MT_DOCKER_LIST)
        ) || (self.config.is_none() && !self.manifests.is_empty())
    }

    /// The config descriptor of an image manifest.
    pub fn config(&self, what: &str) -> Result<&Descriptor> {
        self.config
            .as_ref()
            .ok_or_else(|| ImageError::malformed(what, "manifest has no config descriptor"))
    }
}

/// The parts of an OCI / Docker image config the runtime uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
    /// The OCI Wasm artifact's list of the manifest's layer digests, in order (it makes the
    /// config digest unique to its layers; see [`super`] on image IDs).
    #[serde(default, rename = "layerDigests")]
    pub layer_digests: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The node's architecture in OCI/Go naming.
pub fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "arm" => "arm",
        other => other,
    }
}

/// Whether `p` names a Wasm platform (`wasm` architecture or a `wasi*` OS).
pub fn is_wasm_platform(p: &PlatformSpec) -> bool {
    p.architecture == "wasm" || p.os.starts_with("wasi") || p.os == "wasip1" || p.os == "wasip2"
}

/// Picks the manifest to use from an index: `wasi/wasm` first, then `linux/<node arch>`, then
/// the only entry if it carries no platform; otherwise [`ImageError::NoMatchingPlatform`].
pub fn select_platform<'a>(entries: &'a [Descriptor], reference: &str) -> Result<&'a Descriptor> {
    let is_manifest = |d: &&Descriptor| {
        matches!(
            d.media_type.as_str(),
            MT_OCI_MANIFEST | MT_DOCKER_MANIFEST | MT_OCI_INDEX | MT_DOCKER_LIST
        )
    };
    if let Some(d) = entries
        .iter()
        .filter(is_manifest)
        .find(|d| d.platform.as_ref().is_some_and(is_wasm_platform))
    {
        return Ok(d);
    }
    if let Some(d) = entries.iter().filter(is_manifest).find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == node_arch())
    }) {
        return Ok(d);
    }
    if let [only] = entries
        && only.platform.is_none()
    {
        return Ok(only);
    }
    Err(ImageError::NoMatchingPlatform {
        reference: reference.to_string(),
        offered: entries
            .iter()
            .map(|d| {
                d.platform
                    .as_ref()
                    .map_or_else(|| format!("(no platform) {}", d.digest), |p| p.to_string())
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, n: u8) -> Descriptor {
        Descriptor {
            media_type: MT_OCI_MANIFEST.into(),
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            size: 1,
            annotations: Default::default(),
            platform: Some(PlatformSpec {
                architecture: arch.into(),
                os: os.into(),
                variant: None,
            }),
            artifact_type: None,
        }
    }

    #[test]
    fn prefers_wasm_then_node_platform() {
        let e = vec![
            entry("linux", node_arch(), 1),
            entry("wasip1", "wasm", 2),
            entry("linux", "s390x", 3),
        ];
        assert_eq!(select_platform(&e, "x").unwrap().digest, e[1].digest);
        let e = vec![entry("linux", "s390x", 3), entry("linux", node_arch(), 1)];
        assert_eq!(select_platform(&e, "x").unwrap().digest, e[1].digest);
        let e = vec![entry("windows", "amd64", 3), entry("linux", "mips", 4)];
        match select_platform(&e, "x").unwrap_err() {
            ImageError::NoMatchingPlatform { offered, .. } => {
                assert_eq!(offered, vec!["windows/amd64", "linux/mips"])
            }
            other => panic!("{other}"),
        }
    }
}
