//! `janitorctl`: validate configs, enqueue runs, and run the pipeline locally.
//! Exit codes: 0 success, 1 some job failed, 2 usage, config or settings error.

mod enqueue;
mod local;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use janitor_model::config::{self, ParseOptions};

/// Exit code for usage, config and settings errors.
pub const EXIT_USAGE: u8 = 2;

/// Validate and fix Docker/GPU repositories on disposable GPU instances.
#[derive(Parser)]
#[command(name = "janitorctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a workers config (or repos list) and print every problem as file:line: field: message
    Validate {
        file: PathBuf,
        /// Accept file:// and relative repository URLs
        #[arg(long, env = "JANITOR_ALLOW_LOCAL_REPOS")]
        allow_local_repos: bool,
    },
    /// Write the run manifest and put one job per repository on the queue; prints the run id
    Enqueue {
        file: PathBuf,
        #[command(flatten)]
        aws: enqueue::AwsFlags,
        /// Override every repository's timeout (TIMEOUT_MINUTES in the Makefile)
        #[arg(long)]
        timeout_minutes: Option<u64>,
        /// Accept file:// and relative repository URLs (the daemon must allow them too)
        #[arg(long, env = "JANITOR_ALLOW_LOCAL_REPOS")]
        allow_local_repos: bool,
    },
    /// Run every repository of FILE through the pipeline
    Run {
        file: PathBuf,
        /// Run on this machine's Docker, no AWS; reports go to --out
        #[arg(long)]
        local: bool,
        /// Where --local writes reports and logs
        #[arg(long, default_value = "reports")]
        out: PathBuf,
        /// Override every repository's timeout
        #[arg(long)]
        timeout_minutes: Option<u64>,
        /// Seconds between SIGTERM and SIGKILL when a container must stop
        #[arg(long, default_value_t = 30)]
        stop_grace_seconds: u64,
        /// Echo every container output line, not just step results
        #[arg(long, short)]
        verbose: bool,
    },
}

fn parse_options(
    allow_local_repos: bool,
    timeout_minutes: Option<u64>,
) -> Result<ParseOptions, String> {
    let timeout_override = match timeout_minutes {
        None => None,
        Some(m) if m == 0 || m > config::MAX_TIMEOUT.as_secs() / 60 => {
            return Err(format!(
                "--timeout-minutes {m}: must be from 1 to {}",
                config::MAX_TIMEOUT.as_secs() / 60
            ))
        }
        Some(m) => Some(std::time::Duration::from_secs(m * 60)),
    };
    Ok(ParseOptions {
        allow_local_repos,
        timeout_override,
    })
}

/// Loads and validates a config, printing every problem; `None` means exit 2.
pub fn load_config(file: &std::path::Path, opts: &ParseOptions) -> Option<config::WorkersConfig> {
    match config::load(file, opts) {
        Ok(cfg) => Some(cfg),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!(
                "{}: {} problem(s); nothing was started",
                file.display(),
                errors.0.len()
            );
            None
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate {
            file,
            allow_local_repos,
        } => {
            let opts = ParseOptions {
                allow_local_repos,
                timeout_override: None,
            };
            match load_config(&file, &opts) {
                Some(cfg) => {
                    println!("{}", output::summary(&cfg));
                    0
                }
                None => EXIT_USAGE,
            }
        }
        Command::Enqueue {
            file,
            aws,
            timeout_minutes,
            allow_local_repos,
        } => match parse_options(allow_local_repos, timeout_minutes) {
            Err(e) => {
                eprintln!("janitorctl: {e}");
                EXIT_USAGE
            }
            Ok(opts) => with_runtime(enqueue::command(file, aws, opts)),
        },
        Command::Run {
            file,
            local,
            out,
            timeout_minutes,
            stop_grace_seconds,
            verbose,
        } => {
            if !local {
                eprintln!("janitorctl run: only --local runs are available in this version; use `janitorctl enqueue FILE` to queue jobs for the fleet");
                EXIT_USAGE
            } else {
                match parse_options(true, timeout_minutes) {
                    Err(e) => {
                        eprintln!("janitorctl: {e}");
                        EXIT_USAGE
                    }
                    Ok(opts) => with_runtime(local::command(local::LocalRun {
                        file,
                        out,
                        opts,
                        stop_grace: std::time::Duration::from_secs(stop_grace_seconds),
                        verbose,
                    })),
                }
            }
        }
    };
    ExitCode::from(code)
}

fn with_runtime(fut: impl std::future::Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("janitorctl: cannot start the async runtime: {e}");
            1
        }
    }
}
