//! `tally gen`: seeded synthetic clicks and their catalog.

use std::path::PathBuf;

use clap::Args;

use tally::sources::generator::{write_catalog, write_ndjson, GeneratorConfig};

#[derive(Args)]
pub struct GenArgs {
    /// Where to write the clicks ("-" for stdout).
    #[arg(long, default_value = "-")]
    output: PathBuf,
    /// Where to write the matching catalog CSV.
    #[arg(long)]
    catalog: Option<PathBuf>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    clicks: Option<u64>,
    #[arg(long)]
    ads: Option<u32>,
    #[arg(long)]
    campaigns: Option<u32>,
    #[arg(long)]
    advertisers: Option<u32>,
    #[arg(long)]
    users: Option<u64>,
    /// Share of clicks on the viral ad (0..1).
    #[arg(long)]
    viral_share: Option<f64>,
    /// Share of clicks retried with the same request id (0..1).
    #[arg(long)]
    duplicate_rate: Option<f64>,
    /// Out-of-order jitter of event time, ms.
    #[arg(long)]
    jitter_ms: Option<u64>,
    /// Share of clicks beyond allowed lateness (0..1).
    #[arg(long)]
    too_late_share: Option<f64>,
    /// Partitions of the target log (for idle partitions).
    #[arg(long)]
    partitions: Option<u32>,
    /// Partitions left idle in stretches.
    #[arg(long)]
    idle_partitions: Option<u32>,
    /// Event-time rate, clicks per second.
    #[arg(long)]
    rate_per_s: Option<u64>,
    /// Event time of the first click, ms since the Unix epoch.
    #[arg(long)]
    start_ms: Option<u64>,
}

pub fn generate(args: GenArgs) -> i32 {
    let d = GeneratorConfig::default();
    let config = GeneratorConfig {
        seed: args.seed.unwrap_or(d.seed),
        clicks: args.clicks.unwrap_or(d.clicks),
        ads: args.ads.unwrap_or(d.ads),
        campaigns: args.campaigns.unwrap_or(d.campaigns),
        advertisers: args.advertisers.unwrap_or(d.advertisers),
        users: args.users.unwrap_or(d.users),
        viral_share: args.viral_share.unwrap_or(d.viral_share),
        duplicate_rate: args.duplicate_rate.unwrap_or(d.duplicate_rate),
        jitter_ms: args.jitter_ms.unwrap_or(d.jitter_ms),
        too_late_share: args.too_late_share.unwrap_or(d.too_late_share),
        partitions: args.partitions.unwrap_or(d.partitions),
        idle_partitions: args.idle_partitions.unwrap_or(d.idle_partitions),
        rate_per_s: args.rate_per_s.unwrap_or(d.rate_per_s),
        start_ms: args.start_ms.unwrap_or(d.start_ms),
        ..d
    };
    if let Err(reason) = config.validate() {
        eprintln!("error: tally gen: {reason}");
        return 2;
    }
    match write_outputs(&config, &args.output, args.catalog.as_ref()) {
        Ok(lines) => {
            eprintln!("wrote {lines} clicks");
            0
        }
        Err(error) => {
            eprintln!("error: tally gen: {error}");
            1
        }
    }
}

pub fn write_outputs(config: &GeneratorConfig, output: &PathBuf, catalog: Option<&PathBuf>) -> std::io::Result<u64> {
    use std::io::Write;
    let lines = if output.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let lines = write_ndjson(config, &mut out)?;
        out.flush()?;
        lines
    } else {
        let mut out = std::io::BufWriter::new(std::fs::File::create(output)?);
        let lines = write_ndjson(config, &mut out)?;
        out.flush()?;
        lines
    };
    if let Some(path) = catalog {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        write_catalog(config, &mut out)?;
        out.flush()?;
    }
    Ok(lines)
}
