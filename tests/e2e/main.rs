//! End-to-end tests: the real daemon over its unix socket, driven by a generated CRI client.
//! Needs root (cgroups, namespaces) and the guests from `examples/guests` (see tests/run.sh).

mod attach;
mod cli;
mod delegate;
mod exec;
mod harness;
mod hostile_images;
mod hostile_paths;
mod hostile_pods;
mod hostile_requests;
mod hostile_runner;
mod http;
mod images;
mod kubelet;
mod kubelet136;
mod lifecycle;
mod metrics;
mod network;
mod resources;
mod restart;
mod streaming;
mod userns;
mod volumes;
