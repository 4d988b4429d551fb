//! `janitorctl run --local`: the daemon's pipeline, in-process, on this machine's Docker.

use std::time::Duration;

use janitor_model::job::Job;
use janitor_model::ledger;
use janitor_model::report::{InstanceInfo, Report};
use janitor_pipeline::{self as pipeline, JobContext, Tools};
use janitor_services::engine::{DockerEngine, Graces};
use janitor_services::logs::FileSink;
use janitor_services::registry::Anonymous;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::run::RunArgs;
use crate::term::{say, tell};
use crate::{output, CtlError};

/// janitor's own agent as `scripts/agent-image.sh` tags it.
const LOCAL_AGENT_IMAGE: &str = "janitor-agent:latest";

pub async fn command(run: RunArgs) -> Result<u8, CtlError> {
    let opts = crate::parse_options(true, run.timeout_minutes)?;
    let Some(crate::run::Prepared { cfg, .. }) =
        crate::run::config(&run, &opts, &crate::pools::default_list()).await?
    else {
        return Ok(0);
    };
    let stop_grace = Duration::from_secs(run.stop_grace_seconds);
    let engine = DockerEngine::connect().await?;
    // NVML where the machine has it: the CUDA check and the GPU-use sampling need it.
    let gpu = janitor_services::gpu::Probe::open();
    let now = OffsetDateTime::now_utc();
    let run_id = ledger::new_run_id(now);
    let run_dir = run.out.join(&run_id);
    let work_root = std::env::temp_dir().join("janitor-local").join(&run_id);
    for dir in [&run_dir, &work_root] {
        std::fs::create_dir_all(dir).map_err(CtlError::io(dir))?;
    }
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tell!("\ninterrupted: stopping the running job");
                cancel.cancel();
            }
        });
    }
    let instance = InstanceInfo {
        id: "local".to_string(),
        instance_type: "local".to_string(),
        availability_zone: "local".to_string(),
        lifecycle: "local".to_string(),
    };
    tell!(
        "Run {run_id}: {} repositories on the local Docker engine",
        cfg.repositories.len()
    );
    let total = cfg.repositories.len();
    let mut reports: Vec<Report> = Vec::new();
    for (i, spec) in cfg.repositories.iter().enumerate() {
        let job = Job {
            job_id: ledger::new_job_id(&spec.repo.name),
            run_id: run_id.clone(),
            spec: spec.clone(),
            enqueued_at: now,
        };
        let log_path = run_dir.join(format!("{}.log", job.job_id));
        tell!(
            "[{}/{total}] {} (timeout {}) …",
            i + 1,
            spec.repo.full_name(),
            janitor_model::duration::format(spec.timeout)
        );
        let sink = FileSink::create(&log_path, run.verbose).map_err(CtlError::io(&log_path))?;
        // `secrets:` are read with the machine's AWS credentials, as janitord reads them with
        // the instance role's.
        let (secrets, unreadable) = if spec.secrets.is_empty() {
            (Default::default(), None)
        } else {
            let config = janitor_services::aws::sdk_config().await;
            let source = janitor_services::secrets::AwsSecrets::new(&config);
            match janitor_services::secrets::resolve(&source, &spec.secrets).await {
                Ok(v) => (v, None),
                Err(why) => (Default::default(), Some(why)),
            }
        };
        let ctx = JobContext {
            job,
            attempt: 1,
            instance: instance.clone(),
            work_root: work_root.clone(),
            graces: Graces {
                deadline: stop_grace,
                interrupt: stop_grace,
            },
            allow_local_repos: true,
            log_ref: None,
            secrets_dir: run.secrets_dir.clone(),
            publish: None,
            secrets,
            // A repository that asks for an agent (`agent:`) without naming one gets janitor's
            // own, built locally by scripts/agent-image.sh.
            agent_limits: janitor_pipeline::agent::AgentLimits {
                default_image: Some(LOCAL_AGENT_IMAGE.to_string()),
                ..Default::default()
            },
            agent_credentials: Vec::new(),
        };
        let tools = Tools {
            engine: &engine,
            registry: &Anonymous,
            gpu: &gpu,
            sink: &sink,
        };
        let mut report = match unreadable {
            Some(why) => pipeline::bare_report(&ctx, janitor_model::report::JobStatus::Error, why),
            None => pipeline::run_job(&tools, &ctx, &cancel).await,
        };
        sink.flush();
        // Offline, the agent's fix is written beside the report.
        if let Some(fix) = report.fix.as_mut() {
            if let Some(text) = fix.patch_text.take() {
                let patch = run_dir.join(format!("{}.patch", report.job_id));
                match std::fs::write(&patch, text) {
                    Ok(()) => fix.patch = Some(patch.display().to_string()),
                    Err(e) => {
                        fix.patch_error = Some(format!("cannot write {}: {e}", patch.display()))
                    }
                }
            }
        }
        let path = run_dir.join(format!("{}.json", report.job_id));
        match serde_json::to_vec_pretty(&report) {
            Ok(body) => {
                if let Err(e) = std::fs::write(&path, body) {
                    tell!("janitorctl: cannot write {}: {e}", path.display());
                }
            }
            Err(e) => tell!(
                "janitorctl: report for {} could not be serialised: {e}",
                report.job_id
            ),
        }
        tell!("      {}", output::steps_line(&report));
        tell!("      {}", output::result_line(&report));
        reports.push(report);
        if cancel.is_cancelled() {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&work_root);
    say!("\n{}", output::results_table(&reports));
    say!("Reports: {}", run_dir.display());
    // The run's page, as `run` writes it beside the manifest on the fleet.
    let view = crate::ledger::RunView {
        run_id: run_id.clone(),
        config_path: cfg.path.display().to_string(),
        created_by: crate::enqueue::whoami(),
        created_at: now,
        timeout_seconds: cfg.repositories.iter().map(|s| s.timeout.as_secs()).sum(),
        max_concurrent_instances: 1,
        estimated_cost_usd: None,
        jobs: reports
            .iter()
            .map(crate::ledger::JobView::finished)
            .collect(),
        not_run: Vec::new(),
    };
    let page = run_dir.join("index.html");
    match std::fs::write(&page, crate::page::run_html(&view)) {
        Ok(()) => say!("The run's page: {}", page.display()),
        Err(e) => tell!("janitorctl: cannot write {}: {e}", page.display()),
    }
    let all_ok = reports.len() == total && reports.iter().all(|r| r.status.is_ok());
    Ok(if all_ok { 0 } else { 1 })
}

/// The files `paths` of the local repository `dir` at `rev` that exist, read with `git show`
/// through the pipeline's isolated git (no config of the machine, no hooks, a deadline): what
/// routing reads of a local repository before it is enqueued.
pub async fn read_files(dir: &str, rev: &str, paths: &[&str]) -> Vec<(String, String)> {
    use janitor_pipeline::git;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut files = Vec::new();
    for f in paths {
        let mut cmd = git::isolated(git::Transport::None);
        cmd.arg("-C").arg(dir).arg("show").arg(format!("{rev}:{f}"));
        if let Ok(text) = git::output(cmd, "show", deadline).await {
            files.push((f.to_string(), text));
        }
    }
    files
}
