//! `janitorctl`: validate configs, run validations on the fleet or locally, and answer
//! questions about runs. Exit codes: 0 success, 1 a job failed or an AWS call did,
//! 2 usage, config or settings error, 3 gave up waiting for the instances to stop.

mod admin;
mod enqueue;
mod error;
mod estimate;
mod fleet;
mod ledger;
mod local;
mod markdown;
mod org;
mod output;
mod page;
mod pools;
mod query;
mod run;
mod settings;
mod term;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use janitor_model::config::{self, ParseOptions};

use crate::term::{say, tell};

pub use error::CtlError;

/// Exit code when the instances did not stop in time.
pub const EXIT_GAVE_UP: u8 = 3;

/// Validate and fix Docker/GPU repositories on disposable GPU instances.
#[derive(Parser)]
#[command(name = "janitorctl", version)]
struct Cli {
    #[command(flatten)]
    settings: settings::Flags,
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
    /// Write the run manifest, put one job per repository on the queue, raise the fleet; prints the run id
    Enqueue {
        file: PathBuf,
        /// Override every repository's timeout (TIMEOUT_MINUTES in the Makefile)
        #[arg(long)]
        timeout_minutes: Option<u64>,
        /// Accept file:// and relative repository URLs (the daemon must allow them too)
        #[arg(long, env = "JANITOR_ALLOW_LOCAL_REPOS")]
        allow_local_repos: bool,
        /// Leave the Auto Scaling groups as they are
        #[arg(long)]
        no_scale: bool,
        /// GitHub's REST API, for the files routing reads
        #[arg(
            long,
            env = "JANITOR_GITHUB_API_URL",
            default_value = "https://api.github.com"
        )]
        github_api_url: String,
    },
    /// Run every repository of FILE: on the fleet (default) or on this machine (--local)
    Run(run::RunArgs),
    /// What a run is doing: jobs, queue, instances (default: the latest run)
    Status {
        run_id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A whole run: configuration, timing, every repository's result
    Show {
        /// The run, or `latest`
        run_id: String,
        #[arg(long)]
        json: bool,
        /// text (default), json, or markdown (a GitHub-flavoured summary for CI)
        #[arg(long, value_enum, default_value_t = query::Format::Text)]
        format: query::Format,
        /// Also write the run's page (one self-contained HTML file) here
        #[arg(long, value_name = "FILE")]
        html: Option<std::path::PathBuf>,
    },
    /// A repository's history, newest first
    Results {
        /// `name` or `organization/name`
        #[arg(long)]
        repo: String,
        /// How many, newest first
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only runs started since: `7d`, `12h`, `90m`, or a date `2026-11-01` (UTC)
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Download a run's reports plus one combined JSON (default: the latest run)
    FetchReport {
        run_id: Option<String>,
        #[arg(long, default_value = "reports")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print a job's output from CloudWatch Logs
    Logs {
        job_id: String,
        /// The job's run, when it is not among the latest 20
        #[arg(long)]
        run: Option<String>,
        /// Keep printing until the job ends
        #[arg(long, short)]
        follow: bool,
    },
    /// Set the desired capacity of each pool's group (or of one, with --pool)
    Scale {
        /// Only this pool's group (required with --desired when there are several pools)
        #[arg(long)]
        pool: Option<String>,
        /// min(max, ceil(backlog / jobs-per-worker)), never below the busy instances
        #[arg(long, conflicts_with = "desired")]
        auto: bool,
        #[arg(long)]
        desired: Option<i32>,
        #[arg(long, default_value_t = 1)]
        jobs_per_worker: u32,
        #[arg(long)]
        json: bool,
    },
    /// Emergency stop: purge the run's pending jobs, scale every pool to zero, terminate every instance
    KillAll {
        /// The run whose pending jobs are purged (default: the latest)
        run_id: Option<String>,
        /// Purge every pending job on the queue, whatever its run
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Settings plus the AWS configuration, built once per command.
pub struct Ctx {
    pub settings: settings::Settings,
    pub sdk: aws_config::SdkConfig,
}

impl Ctx {
    async fn new(settings: settings::Settings) -> Ctx {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = settings.region() {
            loader = loader.region(aws_config::Region::new(region));
        }
        Ctx {
            settings,
            sdk: loader.load().await,
        }
    }

    pub fn ledger(&self) -> Result<ledger::Ledger, CtlError> {
        Ok(ledger::Ledger {
            s3: janitor_services::aws::s3_client(&self.sdk),
            bucket: self.settings.bucket()?,
        })
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    pub fn logs(&self) -> aws_sdk_cloudwatchlogs::Client {
        aws_sdk_cloudwatchlogs::Client::new(&self.sdk)
    }
}

/// Parse options from the timeout and local-repository flags.
pub fn parse_options(
    allow_local_repos: bool,
    timeout_minutes: Option<u64>,
) -> Result<ParseOptions, CtlError> {
    let max = config::MAX_TIMEOUT.as_secs() / 60;
    let timeout_override = match timeout_minutes {
        None => None,
        Some(m) if m == 0 || m > max => {
            return Err(CtlError::Usage(format!(
                "--timeout-minutes {m}: must be from 1 to {max}"
            )))
        }
        Some(m) => Some(Duration::from_secs(m * 60)),
    };
    Ok(ParseOptions {
        allow_local_repos,
        timeout_override,
    })
}

/// Loads and validates a config, printing every problem.
pub fn load_config(file: &Path, opts: &ParseOptions) -> Result<config::WorkersConfig, CtlError> {
    config::load(file, opts).map_err(|errors| {
        for e in &errors.0 {
            tell!("{e}");
        }
        CtlError::Config {
            file: file.to_path_buf(),
            count: errors.0.len(),
        }
    })
}

/// Prints a value as pretty JSON on standard output.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CtlError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CtlError::Io {
        path: "<stdout>".into(),
        source: std::io::Error::other(e),
    })?;
    term::print_json_text(&text);
    Ok(())
}

async fn dispatch(command: Command, flags: settings::Flags) -> Result<u8, CtlError> {
    let settings = settings::Settings::load(flags, Path::new("."))?;
    match command {
        Command::Validate {
            file,
            allow_local_repos,
        } => {
            let cfg = load_config(
                &file,
                &ParseOptions {
                    allow_local_repos,
                    timeout_override: None,
                },
            )?;
            say!("{}", output::summary(&cfg));
            let agents = output::agent_summary(&cfg);
            if !agents.is_empty() {
                say!("{agents}");
            }
            Ok(0)
        }
        Command::Enqueue {
            file,
            timeout_minutes,
            allow_local_repos,
            no_scale,
            github_api_url,
        } => {
            let opts = parse_options(allow_local_repos, timeout_minutes)?;
            let cfg = load_config(&file, &opts)?;
            let ctx = Ctx::new(settings).await;
            let pools = ctx.settings.pools()?;
            let ledger = ctx.ledger()?;
            let fleets = if no_scale {
                Vec::new()
            } else {
                pools
                    .iter()
                    .map(|p| p.fleet(&ctx))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let plan = run::route(&cfg, &pools, &github_api_url, &Default::default()).await?;
            let manifest = enqueue::enqueue(&cfg, &ledger, &ctx.sqs(), &pools, &plan, None).await?;
            tell!(
                "enqueued {} job(s) for run {}",
                manifest.jobs.len(),
                manifest.run_id
            );
            if !no_scale {
                run::scale_up(&cfg, &pools, &fleets, &plan).await?;
            }
            say!("{}", manifest.run_id);
            Ok(0)
        }
        Command::Run(args) if args.local => local::command(args).await,
        Command::Run(args) => run::command(args, Ctx::new(settings).await).await,
        Command::Status { run_id, json } => {
            query::status(&Ctx::new(settings).await, run_id.as_deref(), json).await
        }
        Command::Show {
            run_id,
            json,
            format,
            html,
        } => {
            let format = if json { query::Format::Json } else { format };
            query::show(&Ctx::new(settings).await, &run_id, format, html.as_deref()).await
        }
        Command::Results {
            repo,
            limit,
            since,
            json,
        } => {
            let since = since
                .as_deref()
                .map(|s| query::parse_since(s, time::OffsetDateTime::now_utc()))
                .transpose()?;
            query::results(&Ctx::new(settings).await, &repo, limit, since, json).await
        }
        Command::FetchReport { run_id, out, json } => {
            query::fetch_report(&Ctx::new(settings).await, run_id.as_deref(), &out, json).await
        }
        Command::Logs {
            job_id,
            run,
            follow,
        } => query::logs(&Ctx::new(settings).await, &job_id, run.as_deref(), follow).await,
        Command::Scale {
            pool,
            auto,
            desired,
            jobs_per_worker,
            json,
        } => {
            admin::scale(
                &Ctx::new(settings).await,
                pool.as_deref(),
                auto,
                desired,
                jobs_per_worker,
                json,
            )
            .await
        }
        Command::KillAll { run_id, all, json } => {
            admin::kill_all(&Ctx::new(settings).await, run_id.as_deref(), all, json).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tell!("janitorctl: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli.command, cli.settings)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tell!("janitorctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
