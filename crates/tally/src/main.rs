//! The `tally` binary: parse flags, load settings, start logging, dispatch.
//! Everything else lives in the library.

use anyhow::Context;
use clap::Parser;

use tally::cli::{Cli, Command, UsersCommand};
use tally::config::Settings;
use tally::startup::{self, Application};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings =
        Settings::load(cli.config.as_deref(), &cli.overrides()).context("loading settings")?;
    tally::telemetry::init_tracing(settings.log_format);

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
            let report = tally::loadgen::run_from_cli(&settings, &flags)
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
        Command::Users(UsersCommand::Seed(flags)) => {
            let started = std::time::Instant::now();
            let seeded = startup::seed(
                &settings,
                &flags.prefix,
                flags.count,
                flags.tokens_out.as_deref(),
            )
            .await
            .context("seeding users")?;
            println!(
                "created {} users (ids {}..={}) in {:.2}s",
                seeded.count,
                seeded.first_id,
                seeded.first_id + seeded.count as i64 - 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
