//! `coremesh identity check --config FILE`: loads the `[identity]` a configuration names
//! as the proxy would (the X.509-SVID rules, the key against the certificate, the chain
//! against the trust anchors) and prints the identity, the chain and the expiry. Exit
//! status: 0 when the identity is usable, 1 with the reason when it is not, 2 when the
//! configuration itself is invalid.

use crate::identity::{unix_seconds, Identity};
use rustls::pki_types::UnixTime;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

#[derive(clap::Args, Debug, Clone)]
pub struct IdentityArgs {
    #[command(subcommand)]
    pub command: IdentityCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum IdentityCommand {
    /// Check the workload certificate, key and trust anchors of a configuration's
    /// `[identity]`, and print the identity and its expiry.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs `coremesh identity …`.
pub fn run(args: IdentityArgs) -> ExitCode {
    match args.command {
        IdentityCommand::Check { config } => check(&config),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let config = match coremesh_discovery::load_config(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let Some(settings) = config.identity else {
        eprintln!(
            "coremesh identity check: {} has no [identity] section",
            path.display()
        );
        return ExitCode::FAILURE;
    };
    let now = UnixTime::now();
    match Identity::load(&settings, now) {
        Ok(identity) => {
            let chain = identity.certified.cert.len();
            println!("identity: {}", identity.id);
            println!(
                "chain: {chain} certificate{} from {}, leads to the trust anchors of {} ({} anchor{})",
                if chain == 1 { "" } else { "s" },
                settings.cert.display(),
                settings.trust_anchors.display(),
                identity.roots.len(),
                if identity.roots.len() == 1 { "" } else { "s" },
            );
            println!("valid from: {}", time(identity.not_before));
            let left = identity.not_after - unix_seconds(now);
            println!(
                "expires: {} (unix {}, in {})",
                time(identity.not_after),
                identity.not_after,
                humantime::format_duration(Duration::from_secs(whole_minutes(left)))
            );
            println!("OK");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "coremesh identity check: refused ({}): {}",
                error.reason.label(),
                error.detail
            );
            ExitCode::FAILURE
        }
    }
}

/// `seconds` (negative: none) rounded down to whole minutes.
fn whole_minutes(seconds: i64) -> u64 {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    seconds - seconds % 60
}

/// `unix` seconds as RFC 3339 (UTC); far dates the clock cannot hold as plain seconds.
fn time(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(secs) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
        Err(_) => format!("{unix} (unix seconds)"),
    }
}
