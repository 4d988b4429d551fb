//! `janitorctl run FILE`: validate, estimate the cost, enqueue, scale up, follow the run to its
//! end, print the results, and wait until the fleet has stopped.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use janitor_model::config::WorkersConfig;
use janitor_model::duration;
use janitor_model::ledger::Discovery;
use janitor_model::pricing;

use crate::fleet::Fleet;
use crate::ledger::{JobState, RunView};
use crate::pools::{Plan, Pool};
use crate::term::{say, say_part, tell, tell_part};
use crate::{output, CtlError, Ctx, EXIT_GAVE_UP};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The workers config (or repos list); with --org, per-repository overrides
    #[arg(required_unless_present = "org")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub org: crate::org::OrgArgs,
    /// Run on this machine's Docker, no AWS; reports go to --out
    #[arg(long)]
    pub local: bool,
    /// Override every repository's timeout (TIMEOUT_MINUTES in the Makefile)
    #[arg(long)]
    pub timeout_minutes: Option<u64>,
    /// Enqueue and scale up, then return without following the run
    #[arg(long)]
    pub no_wait: bool,
    /// Start without asking to confirm the cost estimate
    #[arg(long, short)]
    pub yes: bool,
    /// How long to wait for the instances to stop after the run, in minutes
    #[arg(long, default_value_t = 5)]
    pub wait_minutes: u64,
    /// How long the run page's presigned link stays valid, in days (1 to 7, S3's limit)
    #[arg(long, default_value_t = 7)]
    pub page_expiry_days: u64,
    /// Seconds between progress checks
    #[arg(long, default_value_t = 5)]
    pub poll_seconds: u64,
    /// Accept file:// and relative repository URLs (always on with --local)
    #[arg(long, env = "JANITOR_ALLOW_LOCAL_REPOS")]
    pub allow_local_repos: bool,
    /// --local: where reports and logs go
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// --local: seconds between SIGTERM and SIGKILL when a container must stop
    #[arg(long, default_value_t = 30)]
    pub stop_grace_seconds: u64,
    /// --local: build secrets, one file per id (`build_secrets: [HF_TOKEN]` reads `HF_TOKEN`)
    #[arg(
        long,
        env = "JANITOR_SECRETS_DIR",
        default_value = "/etc/janitor/secrets"
    )]
    pub secrets_dir: PathBuf,
    /// --local: echo every container output line
    #[arg(long, short)]
    pub verbose: bool,
}

/// Raises each pool's group to `min(its jobs, the config's limit for it
/// (`max_instances_by_pool`, else `max_concurrent_instances`), the pool's max_instances)`, never
/// lowering it.
/// `fleets[i]` is `pools[i]`'s group.
pub async fn scale_up(
    cfg: &WorkersConfig,
    pools: &[Pool],
    fleets: &[Fleet],
    plan: &Plan,
) -> Result<(), CtlError> {
    for (i, jobs) in plan.counts() {
        let (Some(pool), Some(fleet)) = (pools.get(i), fleets.get(i)) else {
            continue;
        };
        let want = jobs
            .min(cfg.max_instances_for(pool.name()) as usize)
            .min(pool.max_instances.map_or(usize::MAX, |m| m as usize));
        let (before, after) = fleet
            .raise_to(i32::try_from(want).unwrap_or(i32::MAX))
            .await?;
        if after > before {
            tell!("Desired capacity of {}: {before} → {after}", fleet.name);
        } else {
            tell!(
                "Desired capacity of {} stays at {before} (asked for {want})",
                fleet.name
            );
        }
    }
    Ok(())
}

/// Routes the run's repositories to the pools (reading their files where routing needs them)
/// and says where each goes and which cannot run.
pub async fn route(
    cfg: &WorkersConfig,
    pools: &[Pool],
    github_api_url: &str,
    known: &BTreeMap<String, Vec<String>>,
) -> Result<Plan, CtlError> {
    let wants_github = cfg.repositories.iter().any(|s| {
        crate::pools::needs_hints(s, pools) && s.repo.clone_url().starts_with("https://github.com/")
    });
    let gh = if wants_github {
        let token = std::env::var("GITHUB_TOKEN").unwrap_or_default();
        Some(
            janitor_services::github::GitHub::new(github_api_url, token.trim())
                .map_err(|e| CtlError::Usage(e.to_string()))?,
        )
    } else {
        None
    };
    // A limit for a pool the fleet does not have is a typo that would leave a pool unbounded.
    for (name, _) in &cfg.max_instances_by_pool {
        if !pools.iter().any(|p| p.name() == name) {
            return Err(CtlError::Usage(format!(
                "{}: max_instances_by_pool: no pool named `{name}`; the pools are {}",
                cfg.path.display(),
                pools.iter().map(Pool::name).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let hints = crate::pools::gather_hints(cfg, pools, gh.as_ref(), known).await;
    let plan = crate::pools::plan(cfg, &hints, pools);
    if pools.len() > 1 {
        for (i, n) in plan.counts() {
            let Some(pool) = pools.get(i) else { continue };
            tell!(
                "Pool {} ({}): {n} job(s)",
                pool.name(),
                pool.shape.instance_type
            );
            for p in plan.placed.iter().filter(|p| p.pool == i) {
                if let Some(spec) = cfg.repositories.get(p.index) {
                    tell!("  {}: {}", spec.repo.full_name(), p.why);
                }
            }
        }
    }
    for n in &plan.not_run {
        tell!("Not run: {}: {}", n.name, n.reason);
    }
    if plan.placed.is_empty() {
        return Err(CtlError::Usage(
            "no repository can run on this fleet's pools (see above)".to_string(),
        ));
    }
    Ok(plan)
}

fn confirm(yes: bool) -> Result<(), CtlError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CtlError::Usage("standard input is not a terminal: pass --yes to start the run without confirming the estimate".to_string()));
    }
    tell_part!("Start the run? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CtlError::Usage(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CtlError::Usage("not started".to_string()))
    }
}

/// The run's config, from FILE or from an organisation's repositories.
pub struct Prepared {
    pub cfg: WorkersConfig,
    pub discovery: Option<Discovery>,
    /// `--org`: which of the files routing reads each repository has (from its tree).
    pub known: BTreeMap<String, Vec<String>>,
}

/// The run's config: FILE, or an organisation's repositories (FILE then holds overrides).
/// `Ok(None)`: a dry run, printed, with where each repository would go among `pools`.
pub async fn config(
    args: &RunArgs,
    opts: &janitor_model::config::ParseOptions,
    pools: &[Pool],
) -> Result<Option<Prepared>, CtlError> {
    let Some(org) = &args.org.org else {
        let Some(file) = &args.file else {
            return Err(CtlError::Usage(
                "name a workers config FILE, or an organisation with --org".to_string(),
            ));
        };
        return Ok(Some(Prepared {
            cfg: crate::load_config(file, opts)?,
            discovery: None,
            known: BTreeMap::new(),
        }));
    };
    janitor_model::names::check_organization(org)
        .map_err(|e| CtlError::Usage(format!("--org {org}: {e}")))?;
    let overrides = match &args.file {
        Some(f) => crate::org::Overrides::read(f, opts)?,
        None => crate::org::Overrides::none(),
    };
    let token = std::env::var("GITHUB_TOKEN").unwrap_or_default();
    let gh = janitor_services::github::GitHub::new(&args.org.github_api_url, token.trim())
        .map_err(|e| CtlError::Usage(e.to_string()))?;
    tell!(
        "Listing the repositories of {org} ({}){}...",
        args.org.github_api_url,
        if token.trim().is_empty() {
            ", no GITHUB_TOKEN: GitHub allows 60 requests an hour"
        } else {
            ""
        }
    );
    let found = crate::org::discover(&gh, org, &args.org, &overrides).await?;
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let text = crate::org::config_text(org, &found, &overrides, &now);
    tell!(
        "{org}: {} repositories with a Dockerfile, {} skipped",
        found.jobs.len(),
        found.skipped.len()
    );
    for s in &found.skipped {
        tell!("  skipped {}: {}", s.name, s.reason);
    }
    if args.org.dry_run {
        say_part!("{text}");
    }
    if found.jobs.is_empty() {
        if args.org.dry_run {
            return Ok(None);
        }
        return Err(CtlError::Usage(format!(
            "{org} has no repository to run (every one was skipped)"
        )));
    }
    let path = PathBuf::from(format!("--org {org}"));
    let cfg = janitor_model::config::parse(&path, &text, opts).map_err(|errors| {
        for e in &errors.0 {
            tell!("{e}");
        }
        CtlError::Config {
            file: path.clone(),
            count: errors.0.len(),
        }
    })?;
    let known: BTreeMap<String, Vec<String>> = found
        .jobs
        .iter()
        .map(|f| (format!("{org}/{}", f.name), f.hint_files.clone()))
        .collect();
    if args.org.dry_run {
        // Where each would run, and the estimate, as the run would print them.
        let plan = route(&cfg, pools, &args.org.github_api_url, &known).await?;
        let est = crate::pools::estimate(&cfg, pools, &plan);
        tell!(
            "Cost estimate (if every job used its whole timeout): ${:.2}",
            est.total_usd
        );
        for line in &est.lines {
            tell!("  {line}");
        }
        return Ok(None);
    }
    Ok(Some(Prepared {
        cfg,
        discovery: Some(crate::org::record(org, &found, &overrides)),
        known,
    }))
}

pub async fn command(args: RunArgs, ctx: Ctx) -> Result<u8, CtlError> {
    let opts = crate::parse_options(args.allow_local_repos, args.timeout_minutes)?;
    let configured = ctx.settings.pools();
    // Configured pools must be right; without any, a dry run shows Terraform's defaults.
    let for_dry_run = match &configured {
        Ok(p) => p.clone(),
        Err(_) if !ctx.settings.has_pools() => crate::pools::default_list(),
        Err(e) => return Err(crate::settings::SettingsError(e.0.clone()).into()),
    };
    let Some(Prepared {
        cfg,
        discovery,
        known,
    }) = config(&args, &opts, &for_dry_run).await?
    else {
        return Ok(0);
    };
    // Every setting up front: nothing is sent unless all are there.
    let pools = configured?;
    let ledger = ctx.ledger()?;
    let fleets = pools
        .iter()
        .map(|p| p.fleet(&ctx))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = route(&cfg, &pools, &args.org.github_api_url, &known).await?;
    let est = crate::pools::estimate(&cfg, &pools, &plan);
    tell!(
        "Launching parallel validation for {} repositories...",
        plan.placed.len()
    );
    tell!(
        "Cost estimate (if every job used its whole timeout): ${:.2}",
        est.total_usd
    );
    for line in &est.lines {
        tell!("  {line}");
    }
    tell!("  prices: {}", pricing::PRICES_AS_OF);
    confirm(args.yes)?;
    let manifest =
        crate::enqueue::enqueue(&cfg, &ledger, &ctx.sqs(), &pools, &plan, discovery).await?;
    let run_id = manifest.run_id.clone();
    tell!("Run {run_id}: {} job(s) enqueued", manifest.jobs.len());
    scale_up(&cfg, &pools, &fleets, &plan).await?;
    // The run waits for the groups it used to stop.
    let used: Vec<Fleet> = plan
        .counts()
        .keys()
        .filter_map(|i| fleets.get(*i).cloned())
        .collect();
    let timeout = Duration::from_secs(crate::ledger::run_timeout_seconds(&manifest));
    if args.no_wait {
        tell!();
        tell!("Timeout: {}", output::minutes(timeout));
        tell!("Use 'make check-parallel-status ENV=…' (janitorctl status {run_id}) to monitor progress");
        tell!("Use 'make kill-all-workers ENV=…' (janitorctl kill-all) for emergency termination");
        say!("{run_id}");
        return Ok(0);
    }

    let view = follow(
        &ledger,
        &run_id,
        Duration::from_secs(args.poll_seconds.max(1)),
    )
    .await?;
    say!("\n{}", output::run_results(&view));
    let all_ok = view.is_done() && view.succeeded() == view.jobs.len() && plan.not_run.is_empty();
    // The run's page beside its manifest, and a link a maintainer can open without AWS access.
    let expiry = Duration::from_secs(args.page_expiry_days.clamp(1, 7) * 86_400);
    match ledger
        .put_page(&run_id, crate::page::run_html(&view), expiry)
        .await
    {
        Ok(url) => say!(
            "The run's page (valid {} days): {url}",
            args.page_expiry_days.clamp(1, 7)
        ),
        Err(e) => tell!("The run's page was not written: {e}"),
    }

    let waited = wait_for_stop(
        &used,
        Duration::from_secs(args.wait_minutes * 60),
        Duration::from_secs(args.poll_seconds.max(1)),
    )
    .await?;
    match waited {
        Ok(took) => say!(
            "All instances of {} stopped {} after the run.",
            used.iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            duration::format(took)
        ),
        Err(left) => {
            say!(
                "Gave up after {}m: still InService: {}. Stop them with `janitorctl kill-all`.",
                args.wait_minutes,
                left.join(", ")
            );
            return Ok(EXIT_GAVE_UP);
        }
    }
    Ok(if all_ok { 0 } else { 1 })
}

/// Follows the run until every job is finished or the run's timeout has passed.
async fn follow(
    ledger: &crate::ledger::Ledger,
    run_id: &str,
    every: Duration,
) -> Result<RunView, CtlError> {
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        let view = ledger.run_view(run_id).await?;
        let now = time::OffsetDateTime::now_utc();
        let line = output::progress_line(&view, now);
        let counts = (
            view.count(JobState::Finished),
            view.count(JobState::Running),
            view.count(JobState::Queued),
        );
        let key = format!("{counts:?}");
        if tty {
            eprint!("\r\x1b[2K{}", crate::term::line(&line));
        } else if key != last {
            tell!("{line}");
        }
        last = key;
        if view.is_done() {
            if tty {
                tell!();
            }
            return Ok(view);
        }
        if now > view.deadline() {
            if tty {
                tell!();
            }
            tell!("The run's timeout has passed with jobs unfinished; giving up on following it.");
            return Ok(view);
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until no instance of the groups is InService. `Err` holds the ones still there.
async fn wait_for_stop(
    fleets: &[Fleet],
    limit: Duration,
    every: Duration,
) -> Result<Result<Duration, Vec<String>>, CtlError> {
    let start = Instant::now();
    let mut announced = false;
    loop {
        let mut in_service: Vec<String> = Vec::new();
        for fleet in fleets {
            let g = fleet.describe().await?;
            in_service.extend(g.in_service().iter().map(|i| i.instance_id.clone()));
        }
        if in_service.is_empty() {
            return Ok(Ok(start.elapsed()));
        }
        if start.elapsed() >= limit {
            return Ok(Err(in_service));
        }
        if !announced {
            tell!(
                "Waiting up to {}m for {} instance(s) to scale in...",
                limit.as_secs() / 60,
                in_service.len()
            );
            announced = true;
        }
        tokio::time::sleep(every).await;
    }
}
