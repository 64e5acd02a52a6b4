//! `cdrflow report`: one region's calls as a self-contained HTML page.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::{ClickHouseArgs, region_arg};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Region code (e.g. 38 for Irkutsk Oblast).
    #[arg(long)]
    region: u8,
    /// First UTC date (YYYY-MM-DD), inclusive.
    #[arg(long)]
    from: jiff::civil::Date,
    /// Last UTC date, inclusive.
    #[arg(long)]
    to: jiff::civil::Date,
    /// The HTML file to write.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
}

pub fn run(a: ReportArgs) -> Result<()> {
    region_arg(Some(a.region))?;
    if a.from > a.to {
        bail!("--from {} is after --to {}: the range is empty; swap them", a.from, a.to);
    }
    let rt = super::runtime()?;
    let ch = a.clickhouse.connect(&rt)?;
    let o = cdrflow_dashboards::report::ReportOptions { region: a.region, from: a.from, to: a.to };
    let r = cdrflow_dashboards::report::run(&ch, &rt, &o, &a.out)?;
    tracing::info!(out = %a.out.display(), region = r.region, offered = r.offered, lines = r.lines.len(), "report written");
    Ok(())
}
