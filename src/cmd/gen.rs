//! `tally gen`: seeded synthetic clicks and their catalog.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use tally::exit;
use tally::sources::generator::{write_catalog, write_ndjson, GeneratorConfig};
use tally::stdio;

#[derive(Args)]
pub struct GenArgs {
    /// Where to write the clicks ("-" for stdout).
    #[arg(long, default_value = "-")]
    output: PathBuf,
    /// Where to write the matching catalog CSV ("-" for stdout, with --output FILE).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = GeneratorConfig::default().seed)]
    seed: u64,
    /// Click lines to write (retries and late clicks included).
    #[arg(long, default_value_t = GeneratorConfig::default().clicks)]
    clicks: u64,
    /// Distinct ads (Zipf popularity).
    #[arg(long, default_value_t = GeneratorConfig::default().ads)]
    ads: u32,
    /// Campaigns the ads are spread over.
    #[arg(long, default_value_t = GeneratorConfig::default().campaigns)]
    campaigns: u32,
    /// Advertisers the campaigns are spread over.
    #[arg(long, default_value_t = GeneratorConfig::default().advertisers)]
    advertisers: u32,
    /// Distinct users.
    #[arg(long, default_value_t = GeneratorConfig::default().users)]
    users: u64,
    /// Share of clicks on the viral ad (0..1).
    #[arg(long, default_value_t = GeneratorConfig::default().viral_share)]
    viral_share: f64,
    /// Share of clicks retried with the same request id (0..1).
    #[arg(long, default_value_t = GeneratorConfig::default().duplicate_rate)]
    duplicate_rate: f64,
    /// Out-of-order jitter of event time, ms.
    #[arg(long, default_value_t = GeneratorConfig::default().jitter_ms)]
    jitter_ms: u64,
    /// Share of clicks beyond allowed lateness (0..1).
    #[arg(long, default_value_t = GeneratorConfig::default().too_late_share)]
    too_late_share: f64,
    /// Partitions of the target log (for idle partitions).
    #[arg(long, default_value_t = GeneratorConfig::default().partitions)]
    partitions: u32,
    /// Partitions left idle in stretches.
    #[arg(long, default_value_t = GeneratorConfig::default().idle_partitions)]
    idle_partitions: u32,
    /// Event-time rate, clicks per second.
    #[arg(long, default_value_t = GeneratorConfig::default().rate_per_s)]
    rate_per_s: u64,
    /// Event time of the first click, ms since the Unix epoch.
    #[arg(long, default_value_t = GeneratorConfig::default().start_ms)]
    start_ms: u64,
}

pub fn generate(args: GenArgs) -> i32 {
    let config = GeneratorConfig {
        seed: args.seed,
        clicks: args.clicks,
        ads: args.ads,
        campaigns: args.campaigns,
        advertisers: args.advertisers,
        users: args.users,
        viral_share: args.viral_share,
        duplicate_rate: args.duplicate_rate,
        jitter_ms: args.jitter_ms,
        too_late_share: args.too_late_share,
        partitions: args.partitions,
        idle_partitions: args.idle_partitions,
        rate_per_s: args.rate_per_s,
        start_ms: args.start_ms,
        ..GeneratorConfig::default()
    };
    if let Err(reason) = config.validate() {
        eprintln!("error: tally gen: {reason}");
        return exit::USAGE;
    }
    if stdio::is_std(&args.output) && args.catalog.as_deref().is_some_and(stdio::is_std) {
        eprintln!("error: tally gen: --output and --catalog cannot both be standard output");
        return exit::USAGE;
    }
    match write_outputs(&config, &args.output, args.catalog.as_deref()) {
        Ok(lines) => {
            eprintln!("wrote {lines} clicks");
            exit::OK
        }
        Err(error) => {
            eprintln!("error: tally gen: {error}");
            exit::FAILED
        }
    }
}

fn write_outputs(config: &GeneratorConfig, output: &Path, catalog: Option<&Path>) -> std::io::Result<u64> {
    let describe = |path: &Path| {
        let path = stdio::describe(path, "standard output");
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{path}: {e}"))
    };
    let mut out = BufWriter::new(stdio::writer(output).map_err(describe(output))?);
    let lines = write_ndjson(config, &mut out).and_then(|lines| out.flush().map(|()| lines)).map_err(describe(output))?;
    if let Some(path) = catalog {
        let mut out = BufWriter::new(stdio::writer(path).map_err(describe(path))?);
        write_catalog(config, &mut out).and_then(|()| out.flush()).map_err(describe(path))?;
    }
    Ok(lines)
}
