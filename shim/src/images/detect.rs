//! The one wasm detector: a binary's kind by magic bytes (`wasmparser::Parser::is_component`
//! / `is_core_wasm`, as runwasi's `WasmBinaryType` does) and the [`World`] it targets, read
//! from a component's top-level exports without compiling it.
//!
//! It needs no wasmtime, so the image store (built without the `runtime` feature for the
//! fuzz targets) and the runtime share it; [`crate::wasm::detect`] adds wasmtime's
//! precompiled-artifact check on top.

use serde::{Deserialize, Serialize};

/// Whether a binary is a core module or a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WasmKind {
    /// A core WebAssembly module (WASI preview 1).
    Module,
    /// A WebAssembly component (WASI 0.2).
    Component,
}

/// The WIT world a binary targets, which decides how it runs. Stored in image records by
/// its WIT name (the [`World::as_str`] strings), so records written as strings still load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum World {
    /// A core module: a WASI preview 1 command.
    #[serde(rename = "wasip1")]
    Wasip1,
    /// A component run as a command (`wasi:cli/run`). A component that exports neither
    /// `wasi:cli/run` nor the HTTP handler lands here too: it is started as a command and
    /// fails at instantiation with wasmtime's message naming the missing export.
    #[serde(rename = "wasi:cli/command")]
    CliCommand,
    /// A component exporting `wasi:http/incoming-handler`: served over HTTP.
    #[serde(rename = "wasi:http/proxy")]
    HttpProxy,
}

impl World {
    /// The world's WIT name (`wasip1` for core modules).
    pub fn as_str(self) -> &'static str {
        match self {
            World::Wasip1 => "wasip1",
            World::CliCommand => "wasi:cli/command",
            World::HttpProxy => "wasi:http/proxy",
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The export a component needs to be served over HTTP (any `0.2.x` version).
pub const HTTP_HANDLER_INTERFACE: &str = "wasi:http/incoming-handler";

/// The kind of `bytes` if they start like a wasm binary.
pub fn wasm_kind(bytes: &[u8]) -> Option<WasmKind> {
    if wasmparser::Parser::is_component(bytes) {
        Some(WasmKind::Component)
    } else if wasmparser::Parser::is_core_wasm(bytes) {
        Some(WasmKind::Module)
    } else {
        None
    }
}

/// The world a binary of `kind` targets: [`World::Wasip1`] for modules; for components
/// [`World::HttpProxy`] if a top-level export is `wasi:http/incoming-handler` (any
/// version), else [`World::CliCommand`]. Only the export section headers are read; a parse
/// error falls back to the default for the kind.
pub fn world_of(kind: WasmKind, bytes: &[u8]) -> World {
    match kind {
        WasmKind::Module => World::Wasip1,
        WasmKind::Component => {
            let exports = component_interfaces(bytes).1;
            if exports
                .iter()
                .any(|e| is_interface(e, HTTP_HANDLER_INTERFACE))
            {
                World::HttpProxy
            } else {
                World::CliCommand
            }
        }
    }
}

/// Whether `name` is `interface` at any version (`wasi:cli/run` matches `wasi:cli/run@0.2.3`).
fn is_interface(name: &str, interface: &str) -> bool {
    name.split('@').next() == Some(interface)
}

/// Top-level import and export names of a component (empty on parse errors and for core
/// modules). Nested modules and components are reported inline by `parse_all`; only the
/// outermost component's are the ones a host sees.
pub fn component_interfaces(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    use wasmparser::Payload;
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return (Vec::new(), Vec::new());
        };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                imports.extend(reader.into_iter().flatten().map(|i| i.name.0.to_string()));
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                exports.extend(reader.into_iter().flatten().map(|e| e.name.0.to_string()));
            }
            _ => {}
        }
    }
    (imports, exports)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Smallest valid core module: magic + version 1.
    pub(crate) const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
    /// Smallest valid component: magic + component version/layer.
    pub(crate) const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    /// A component whose only section exports instance 0 under `name` (parses; not valid).
    pub(crate) fn component_exporting(name: &str) -> Vec<u8> {
        let mut content = vec![0x01, 0x00, name.len() as u8];
        content.extend_from_slice(name.as_bytes());
        content.extend_from_slice(&[0x05, 0x00, 0x00]); // sort instance, index 0, no type
        let mut c = COMPONENT.to_vec();
        c.push(11); // component export section
        c.push(content.len() as u8);
        c.extend(content);
        c
    }

    #[test]
    fn http_world_detected() {
        let http = component_exporting("wasi:http/incoming-handler@0.2.0");
        assert_eq!(world_of(WasmKind::Component, &http), World::HttpProxy);
        let cli = component_exporting("wasi:cli/run@0.2.0");
        assert_eq!(world_of(WasmKind::Component, &cli), World::CliCommand);
        assert_eq!(
            component_interfaces(&cli),
            (vec![], vec!["wasi:cli/run@0.2.0".to_string()])
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(wasm_kind(CORE_MODULE), Some(WasmKind::Module));
        assert_eq!(wasm_kind(COMPONENT), Some(WasmKind::Component));
        assert_eq!(wasm_kind(b"#!/bin/sh"), None);
        assert_eq!(world_of(WasmKind::Module, CORE_MODULE), World::Wasip1);
        assert_eq!(world_of(WasmKind::Component, COMPONENT), World::CliCommand);
    }

    #[test]
    fn worlds_are_stored_by_their_wit_names() {
        for w in [World::Wasip1, World::CliCommand, World::HttpProxy] {
            let json = serde_json::to_string(&w).unwrap();
            assert_eq!(json, format!("{:?}", w.as_str()));
            assert_eq!(serde_json::from_str::<World>(&json).unwrap(), w);
        }
        // A name that is only a prefix of the handler's is not the handler.
        let other = component_exporting("wasi:http/incoming-handlerx@0.2.0");
        assert_eq!(world_of(WasmKind::Component, &other), World::CliCommand);
    }
}
