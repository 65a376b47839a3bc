//! The `switchboard` command: `serve` runs the hub, `token` mints a token for trying it out.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use switchboard::{
    auth::{TokenSpec, mint_hs256},
    config::{Settings, configured},
    startup::Application,
    telemetry,
};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Realtime notification hub for the Message Center"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (with no file: the embedded single node on 127.0.0.1:8080).
    Serve {
        /// A TOML file layered over the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a token signed with the configured HS256 secret.
    Token {
        /// The user id the token is for (the `sub` claim), e.g. sam.
        #[arg(long)]
        sub: String,
        /// The tenant (company) the user belongs to, e.g. acme.
        #[arg(long)]
        tenant: String,
        /// Comma-separated: user, admin, service.
        #[arg(long, value_delimiter = ',', default_value = "user")]
        roles: Vec<String>,
        /// Comma-separated location ids.
        #[arg(long, value_delimiter = ',', default_value = "")]
        locations: Vec<String>,
        /// The user's display name (the `name` claim), shown until the directory has one.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// A TOML file layered over the built-in defaults (for `auth.hs256_secret`,
        /// `auth.issuer` and `auth.audience`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            telemetry::init(&settings.log.filter);
            Application::build(settings).await?.run_with_signals().await?;
        }
        Command::Token {
            sub,
            tenant,
            roles,
            locations,
            name,
            ttl,
            config,
        } => {
            let settings = Settings::load(config.as_deref())?;
            let secret = configured(&settings.auth.hs256_secret)
                .ok_or_else(|| anyhow::anyhow!("auth.hs256_secret is not set"))?;
            let spec = TokenSpec {
                sub,
                tenant,
                roles,
                locations: locations.into_iter().filter(|l| !l.is_empty()).collect(),
                name,
                ttl,
                issuer: configured(&settings.auth.issuer).map(str::to_owned),
                audience: configured(&settings.auth.audience).map(str::to_owned),
            };
            println!("{}", mint_hs256(secret, &spec));
        }
    }
    Ok(())
}
