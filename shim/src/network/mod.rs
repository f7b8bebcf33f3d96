//! Network namespaces and CNI (in progress).
