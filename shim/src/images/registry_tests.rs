//! Tests of the store against real registries.
