//! `coremesh demo`: built-in demo (being written).

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Keep the proxy and backends running after the traffic, for curl.
    #[arg(long)]
    pub keep: bool,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
}

pub fn run(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not built yet")
}
