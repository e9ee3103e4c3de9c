//! The `tally` binary: parse flags, load settings, start logging, dispatch.
//! Everything else lives in the library crates (docs/ARCHITECTURE.md):
//! `tally-server` serves, `tally-bench` drives load, `tally-store` stores.

mod bench_cli;
mod cli;

use anyhow::Context;
use clap::Parser;
use tally_server::config::Settings;
use tally_server::startup::{self, Application};

use crate::cli::{Cli, Command, KeysCommand, UsersCommand};

/// jemalloc with its background purge thread: after a peak (a burst of
/// uploads being decoded, thousands of sockets) glibc's per-thread arenas
/// kept most of the memory (a test saw 76 → 224 → 161 MiB), while jemalloc
/// hands unused pages back to the kernel within seconds (44 → 121 → 61).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings =
        Settings::load(cli.config.as_deref(), &cli.overrides()).context("loading settings")?;
    tally_server::telemetry::init_tracing(settings.log_format);

    match cli.command {
        Command::Serve(_) => {
            let app = Application::build(settings)
                .await
                .context("starting tally")?;
            // A stable line on stdout that scripts and tests wait for.
            println!("tally listening on http://{}", app.local_addr());
            app.run_until(startup::shutdown_signal())
                .await
                .context("serving")?;
        }
        Command::Migrate => {
            startup::migrate(&settings).await.context("migrating")?;
            println!("schema is up to date");
        }
        Command::Worker => {
            startup::worker(&settings, startup::shutdown_signal())
                .await
                .context("running the write-behind")?;
        }
        Command::Bench(flags) => {
            let report = bench_cli::run_from_cli(&settings, &flags)
                .await
                .context("running the benchmark")?;
            if report.consistency.verdict != "exact" {
                std::process::exit(4);
            }
        }
        Command::Reconcile(flags) => {
            let report = startup::reconcile(&settings, flags.repair)
                .await
                .context("reconciling")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.drift() > report.repaired {
                std::process::exit(3);
            }
        }
        Command::Keys(KeysCommand::Rotate(flags)) => {
            let grace = flags.grace_secs.unwrap_or(settings.token_ttl_secs);
            let keys = startup::rotate_keys(&settings, std::time::Duration::from_secs(grace))
                .await
                .context("rotating the signing key")?;
            for key in &keys {
                match key.retire_at_ms {
                    None => println!("key {}: signs new tokens", key.id),
                    Some(at) => println!(
                        "key {}: verifies until {} (then retired)",
                        key.id,
                        tally_server::routes::views::rfc3339_ms(at)
                    ),
                }
            }
        }
        Command::Users(UsersCommand::Seed(flags)) => {
            let started = std::time::Instant::now();
            let users = startup::seed_users(
                &settings,
                &flags.prefix,
                flags.count,
                flags.tokens_out.as_deref(),
            )
            .await
            .context("seeding users")?;
            println!(
                "created {} users (ids {}..={}) in {:.2}s",
                users.count,
                users.first_id,
                users.first_id + users.count as i64 - 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
