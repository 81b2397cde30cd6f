//! skylark-loadgen
