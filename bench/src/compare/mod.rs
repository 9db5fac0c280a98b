//! The comparison (stub).
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    #[arg(long)]
    pub quick: bool,
}
pub fn run(_args: CompareArgs) -> anyhow::Result<()> {
    Ok(())
}
