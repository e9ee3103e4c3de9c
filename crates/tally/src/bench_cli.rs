//! `tally bench`: flags, scenario presets and tokens files to a
//! [`BenchConfig`], then the run.

use tally_bench::{BenchConfig, BenchError, Report, parse_duration, run};
use tally_server::config::Settings;
use tally_server::startup;
use tally_store::accounts;

use crate::cli::BenchFlags;

/// A preset: users, posts, duration, rate.
fn scenario(name: &str) -> Result<(u64, usize, &'static str, u32), BenchError> {
    match name {
        "10k" => Ok((10_000, 100, "30s", 2_000)),
        "100k" => Ok((100_000, 1_000, "60s", 5_000)),
        "1m" => Ok((1_000_000, 10_000, "60s", 10_000)),
        other => Err(BenchError::Setup(format!(
            "unknown scenario {other:?} (10k, 100k, 1m)"
        ))),
    }
}

/// `tally bench`: flags (and a scenario) to a run.
pub async fn run_from_cli(settings: &Settings, flags: &BenchFlags) -> Result<Report, BenchError> {
    let preset = flags.scenario.as_deref().map(scenario).transpose()?;
    let users_wanted = flags.users.or(preset.map(|p| p.0)).unwrap_or(1_000);
    let tokens = match &flags.tokens {
        Some(path) => path.clone(),
        None => {
            std::fs::create_dir_all(&flags.out)?;
            // Kept beside the report, to rerun against the same users.
            let path = flags.out.join("tokens.txt");
            let prefix = format!("bench{:08x}_", rand::random::<u32>());
            eprintln!("seeding {users_wanted} users...");
            startup::seed_users(settings, &prefix, users_wanted, Some(&path))
                .await
                .map_err(|e| BenchError::Setup(e.to_string()))?;
            path
        }
    };
    let users = accounts::read_tokens(&tokens)
        .map_err(|e| BenchError::Setup(format!("tokens file: {e}")))?;
    let cfg = BenchConfig {
        target: flags.target.trim_end_matches('/').to_owned(),
        user_count: users.len(),
        users,
        posts: flags.posts.or(preset.map(|p| p.1)).unwrap_or(100),
        duration: parse_duration(
            flags
                .duration
                .as_deref()
                .or(preset.map(|p| p.2))
                .unwrap_or("30s"),
        )
        .map_err(BenchError::Setup)?,
        rate: flags.rate.or(preset.map(|p| p.3)),
        concurrency: flags.concurrency.max(1),
        zipf_exponent: flags.zipf,
        mix: flags.mix.parse().map_err(BenchError::Setup)?,
        timeout: parse_duration(&flags.timeout).map_err(BenchError::Setup)?,
        out_dir: flags.out.clone(),
        progress: !flags.quiet,
        subscribers: flags.subscribers,
        production: startup::connect_production(settings)
            .await
            .map_err(|e| BenchError::Setup(e.to_string()))?,
        label: "bench".into(),
        observer: None,
    };
    run(cfg).await
}
