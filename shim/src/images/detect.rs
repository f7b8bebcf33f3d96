//! Wasm detection by magic bytes (`wasmparser::Parser::is_component` / `is_core_wasm`, as
//! runwasi does) and a cheap guess at the WIT world a binary targets.

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

/// World of core modules: WASI preview 1 commands.
pub const WORLD_WASIP1: &str = "wasip1";
/// World of components exporting `wasi:cli/run` (or anything not recognised as HTTP).
pub const WORLD_CLI_COMMAND: &str = "wasi:cli/command";
/// World of components exporting `wasi:http/incoming-handler`.
pub const WORLD_HTTP_PROXY: &str = "wasi:http/proxy";

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

/// The world a binary targets: `wasip1` for modules; for components `wasi:http/proxy` if a
/// top-level export is `wasi:http/incoming-handler`, else `wasi:cli/command`. Only the
/// export section headers are read; a parse error falls back to the default for the kind.
pub fn world_of(kind: WasmKind, bytes: &[u8]) -> &'static str {
    match kind {
        WasmKind::Module => WORLD_WASIP1,
        WasmKind::Component => {
            if exports_http_handler(bytes) {
                WORLD_HTTP_PROXY
            } else {
                WORLD_CLI_COMMAND
            }
        }
    }
}

fn exports_http_handler(bytes: &[u8]) -> bool {
    component_interfaces(bytes)
        .1
        .iter()
        .any(|e| e.starts_with("wasi:http/incoming-handler"))
}

/// Top-level import and export names of a component (empty on parse errors).
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
        assert_eq!(world_of(WasmKind::Component, &http), WORLD_HTTP_PROXY);
        let cli = component_exporting("wasi:cli/run@0.2.0");
        assert_eq!(world_of(WasmKind::Component, &cli), WORLD_CLI_COMMAND);
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
        assert_eq!(world_of(WasmKind::Module, CORE_MODULE), WORLD_WASIP1);
        assert_eq!(world_of(WasmKind::Component, COMPONENT), WORLD_CLI_COMMAND);
    }
}
