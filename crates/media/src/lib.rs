//! skylark-media
