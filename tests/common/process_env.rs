//! The environment of the processes tests start. Also included by `tests/binary.rs`,
//! which runs the binary on its defaults without the rest of `common`.

use std::process::Command;

/// Removes from `cmd`'s environment every setting a developer's or CI's shell may hold
/// for skylark (`SKYLARK_*`, `DATABASE_URL`, `REDIS_URL`, `OTEL_*`): a process a test
/// starts runs on what the test gives it.
pub fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("SKYLARK_")
            || k == "DATABASE_URL"
            || k == "REDIS_URL"
            || k.starts_with("OTEL_")
        {
            cmd.env_remove(k);
        }
    }
}
