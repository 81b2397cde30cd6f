//! Inputs that once broke a fuzz target, kept in `tests/fuzz-regressions/<target>/`:
//! replayed by the property tests that own those targets.

use std::path::{Path, PathBuf};

/// Where the regression inputs live.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions")
}

/// A fuzz target: its name (its folder of inputs) and the function it runs.
pub type Target<'a> = (&'a str, fn(&[u8]));

/// Feeds every kept input of each target to it (a target without a folder has none);
/// how many ran.
pub fn replay(targets: &[Target]) -> usize {
    let mut ran = 0;
    for (name, target) in targets {
        let Ok(entries) = std::fs::read_dir(dir().join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            target(&std::fs::read(&path).unwrap());
            ran += 1;
        }
    }
    ran
}
