//! `skylark loadtest`: drives a Skylark deployment with WHIP publishers and WHEP viewers
//! (see `crates/loadgen`) and reports join times, latency, bitrate and loss.

use clap::Args;

/// Arguments of `skylark loadtest`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct LoadtestArgs {
    /// Base URL of the deployment, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// Room id to publish to and watch.
    #[arg(long)]
    pub room: String,
}

pub async fn run(_args: LoadtestArgs) -> anyhow::Result<()> {
    anyhow::bail!("skylark loadtest is being built (issue 4)")
}
