//! The command line. Flags override the config file and the environment;
//! every flag also reads a `TALLY_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tally_server::config::LogFormat;
use tally_store::production::Durability;

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about = "Exact, durable, live like counts for image posts"
)]
pub struct Cli {
    /// TOML config file; flags and TALLY_* variables override it.
    #[arg(long, global = true, env = "TALLY_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub common: CommonFlags,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every command. Serialized as config overrides; unset
/// flags are skipped so they do not hide the file or the environment.
#[derive(Debug, Args, Serialize)]
pub struct CommonFlags {
    /// Directory for the embedded store, images and keys [default: ./data].
    #[arg(long, global = true, env = "TALLY_DATA_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,

    /// Redis URL: with --database-url, runs the production backend. A Redis
    /// Cluster: redis+cluster://host:port,host:port (any of its nodes).
    #[arg(long, global = true, env = "TALLY_REDIS_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,

    /// PostgreSQL URL: with --redis-url, runs the production backend.
    #[arg(long, global = true, env = "TALLY_DATABASE_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,

    /// A streaming replica of --database-url for reads that may trail it:
    /// feed pages and who liked [default: the primary].
    #[arg(long, global = true, env = "TALLY_DATABASE_READ_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_read_url: Option<String>,

    /// Prefix of every Redis key (isolates tenants) [default: tally].
    #[arg(long, global = true, env = "TALLY_KEY_PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,

    /// When a like is acknowledged: after Redis (fast), after a Redis
    /// replica has it too (replicated), or after the PostgreSQL commit
    /// (strict) [default: fast].
    #[arg(long, global = true, env = "TALLY_DURABILITY", value_parser = durability_parser())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,

    /// Log format [default: text].
    #[arg(long, global = true, env = "TALLY_LOG_FORMAT",
        value_parser = PossibleValuesParser::new(["text", "json"])
            .try_map(|s| s.parse::<LogFormat>()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (and the web client) until Ctrl-C or SIGTERM.
    Serve(ServeFlags),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage the keys that sign session tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run only the write-behind (Redis streams → PostgreSQL), without the
    /// API; for deployments that set `sync.in_process = false`.
    Worker,
    /// Drive load against a running Tally and prove the counts exact at the
    /// end (see docs/BENCHMARKS.md).
    Bench(BenchFlags),
    /// Compare Redis with PostgreSQL and report (and with --repair, fix)
    /// drift. Exits 3 when drift was found and not repaired.
    Reconcile(ReconcileFlags),
}

#[derive(Debug, Args)]
pub struct ReconcileFlags {
    /// Repair what is found, from PostgreSQL.
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Args, Serialize)]
pub struct ServeFlags {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TALLY_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Turn on the load panel of the web client, for every signed-in user
    /// unless --load-admins names who may use it.
    #[arg(long)]
    #[serde(skip)]
    pub load_panel: bool,
    /// Usernames (comma-separated) who may run loads; implies --load-panel.
    #[arg(long, value_delimiter = ',')]
    #[serde(skip)]
    pub load_admins: Vec<String>,
    /// A browser origin (scheme://host[:port]) whose pages may call the API
    /// cross-origin, e.g. http://127.0.0.1:19006; repeat the flag or
    /// separate with commas [default: none, same-origin only].
    #[arg(long = "cors-origin", value_delimiter = ',')]
    #[serde(skip)]
    pub cors_origins: Vec<String>,
}

/// `[cors]` keys set by flags (only when given: the file/env stand otherwise).
#[derive(Debug, Serialize)]
pub struct CorsOverrides<'a> {
    allowed_origins: &'a [String],
}

/// `[load_panel]` keys set by flags (unset ones are left to the file/env).
#[derive(Debug, Serialize)]
pub struct LoadPanelOverrides<'a> {
    enabled: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    admins: &'a [String],
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create many users at once, without password hashing, and optionally
    /// write a token for each: for load tests and demos. Seeded users cannot
    /// log in with a password.
    Seed(SeedFlags),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key: every node signs new tokens with it once it
    /// reloads its keys (within `auth.key_reload_secs`, or at once when it
    /// sees a token of the new key). The current keys keep verifying for
    /// the grace period, so nobody is signed out at once; then they retire
    /// and their tokens are refused.
    Rotate(RotateFlags),
}

#[derive(Debug, Args)]
pub struct RotateFlags {
    /// How long tokens signed with the current keys stay valid, in seconds
    /// [default: token_ttl_secs, so that no token is cut short]. 0 retires
    /// them at once (after a leak): every session signed with them ends.
    #[arg(long)]
    pub grace_secs: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SeedFlags {
    /// How many users to create.
    #[arg(long)]
    pub count: u64,
    /// Username prefix; users are named PREFIX0, PREFIX1, and so on.
    #[arg(long, default_value = "load_")]
    pub prefix: String,
    /// Write one line per user, `{id} {token}`, to this file.
    #[arg(long)]
    pub tokens_out: Option<PathBuf>,
}

/// The flags that override settings, as one map for the config loader.
#[derive(Debug, Serialize)]
pub struct Overrides<'a> {
    #[serde(flatten)]
    common: &'a CommonFlags,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    serve: Option<&'a ServeFlags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_panel: Option<LoadPanelOverrides<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cors: Option<CorsOverrides<'a>>,
}

impl Cli {
    pub fn overrides(&self) -> Overrides<'_> {
        let serve = match &self.command {
            Command::Serve(flags) => Some(flags),
            _ => None,
        };
        let load_panel = serve
            .filter(|f| f.load_panel || !f.load_admins.is_empty())
            .map(|f| LoadPanelOverrides {
                enabled: true,
                admins: &f.load_admins,
            });
        let cors = serve
            .filter(|f| !f.cors_origins.is_empty())
            .map(|f| CorsOverrides {
                allowed_origins: &f.cors_origins,
            });
        Overrides {
            common: &self.common,
            serve,
            load_panel,
            cors,
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchFlags {
    /// Base URL of the Tally to load.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Preset: 10k, 100k or 1m users (flags given explicitly win).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Tokens file from `tally users seed --tokens-out`; without it the
    /// command seeds `--users` users itself into the store the global flags
    /// point at (the server's data dir, or its Redis + PostgreSQL).
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// Users to seed when no tokens file is given.
    #[arg(long)]
    pub users: Option<u64>,
    /// Posts the run creates and likes.
    #[arg(long)]
    pub posts: Option<usize>,
    /// How long to drive load: 60s, 2m...
    #[arg(long)]
    pub duration: Option<String>,
    /// Open loop: requests per second (on a fixed schedule).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Closed loop without --rate: concurrent users; with --rate: most
    /// requests in flight.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Zipf exponent of post popularity (0: uniform; ~1: a few hot posts).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Operation weights.
    #[arg(long, default_value = "like=60,unlike=20,toggle=5,feed=10,likers=5")]
    pub mix: String,
    /// Per-request timeout.
    #[arg(long, default_value = "10s")]
    pub timeout: String,
    /// Where the JSON and HTML reports go.
    #[arg(long, default_value = "bench/results/loadgen")]
    pub out: PathBuf,
    /// Live WebSocket subscribers on the hottest posts, plus a probe that
    /// measures like-to-push latency (one process holds < 20,000).
    #[arg(long, default_value_t = 0)]
    pub subscribers: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `--durability`'s values, with the promise of each (the store's
/// `Durability` knows nothing of clap).
fn durability_parser() -> impl TypedValueParser<Value = Durability> {
    PossibleValuesParser::new([
        PossibleValue::new("fast").help(
            "After Redis applied the like (and queued its event). Redis's own persistence \
             bounds what a Redis crash can lose",
        ),
        PossibleValue::new("replicated").help(
            "After Redis applied the like and a replica acknowledged it (WAIT 1): it survives \
             the loss of the master",
        ),
        PossibleValue::new("strict")
            .help("After PostgreSQL committed the event (batched by the write-behind)"),
    ])
    .try_map(|s| s.parse::<Durability>())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_durability_has_a_flag_value() {
        for d in Durability::ALL {
            let cli = Cli::try_parse_from(["tally", "--durability", d.as_str(), "migrate"])
                .expect("parses");
            assert_eq!(cli.common.durability, Some(d));
        }
        assert!(Cli::try_parse_from(["tally", "--durability", "eventual", "migrate"]).is_err());
    }

    #[test]
    fn cors_origins_repeat_or_take_commas() {
        let cli = Cli::try_parse_from([
            "tally",
            "serve",
            "--cors-origin",
            "http://127.0.0.1:19006,https://a.example",
            "--cors-origin",
            "https://b.example",
        ])
        .expect("parses");
        let overrides = serde_json::to_value(cli.overrides()).expect("serializes");
        assert_eq!(
            overrides["cors"]["allowed_origins"],
            serde_json::json!([
                "http://127.0.0.1:19006",
                "https://a.example",
                "https://b.example"
            ])
        );
        let cli = Cli::try_parse_from(["tally", "serve"]).expect("parses");
        let overrides = serde_json::to_value(cli.overrides()).expect("serializes");
        assert!(overrides.get("cors").is_none(), "{overrides}");
    }

    #[test]
    fn keys_rotate_takes_a_grace_period() {
        let cli =
            Cli::try_parse_from(["tally", "keys", "rotate", "--grace-secs", "60"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Keys(KeysCommand::Rotate(RotateFlags {
                grace_secs: Some(60)
            }))
        ));
        let cli = Cli::try_parse_from(["tally", "keys", "rotate"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Keys(KeysCommand::Rotate(RotateFlags { grace_secs: None }))
        ));
    }

    #[test]
    fn seed_help_names_the_users_in_full() {
        let help = Cli::command()
            .find_subcommand_mut("users")
            .and_then(|u| u.find_subcommand_mut("seed"))
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.contains("PREFIX0, PREFIX1"), "{help}");
    }
}
