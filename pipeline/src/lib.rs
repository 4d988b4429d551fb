//! One job, start to end, in one direction: `clone` → `preflight` → `build` → `test` (or
//! `run`) → `gpu` → `agent`, each step calling the services it needs (the container engine,
//! the registry login, the GPUs, the log sink) and returning one [`steps::StepOutcome`]; the
//! result is the job's report. Shared by `janitord` and `janitorctl run --local`; it never
//! talks to AWS and always returns a report.

pub mod agent;
pub mod build;
pub mod clone;
pub mod context;
pub mod discover;
pub mod gpu_usage;
pub mod http;
pub mod preflight;
pub mod run;
pub mod scan;
pub mod serve;
pub mod steps;
pub mod verdict;

use std::time::Duration;

use janitor_model::report::{
    CacheInfo, DiskInfo, JobIdentity, JobStatus, Report, StepName, TestMode, TestsReport, Timings,
    REPORT_SCHEMA,
};
use janitor_services::disk;
use janitor_services::engine::ContainerEngine;
use janitor_services::gpu::GpuProbe;
use janitor_services::logs::LogSink;
use janitor_services::registry::RegistryAuth;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use context::{image_tag, job_labels, JobContext};
use steps::{round_ms, StepEnv, StepOutcome, Steps};

/// The services one job's steps use.
pub struct Tools<'a, E, R> {
    pub engine: &'a E,
    pub registry: &'a R,
    pub gpu: &'a dyn GpuProbe,
    pub sink: &'a dyn LogSink,
}

/// Runs the job and returns its report. Never panics on the job's input; an engine that cannot
/// be reached fails the step that needed it.
#[tracing::instrument(name = "pipeline", skip_all, fields(job_id = %ctx.job.job_id, repo = %ctx.job.spec.repo.full_name()))]
pub async fn run_job<E: ContainerEngine, R: RegistryAuth>(
    tools: &Tools<'_, E, R>,
    ctx: &JobContext,
    cancel: &CancellationToken,
) -> Report {
    let (engine, sink) = (tools.engine, tools.sink);
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let spec = &ctx.job.spec;
    let deadline = clock + spec.timeout;
    let job_dir = ctx.work_root.join(&ctx.job.job_id);
    let repo_dir = job_dir.join("repo");
    let io_dir = job_dir.join("janitor");
    let free_before = disk::free_bytes(&ctx.work_root);
    let mut steps = Steps::default();
    let mut scanner = scan::ErrorScanner::new(&spec.expected_errors);
    let mut cache = CacheInfo::default();
    let mut built_with = None;
    let mut gpu = None;
    let mut agent_output = None;

    // Start clean: a directory left by an earlier attempt on this instance is stale.
    let _ = tokio::fs::remove_dir_all(&job_dir).await;
    let t = Instant::now();
    let cloned = match tokio::fs::create_dir_all(&io_dir).await {
        Err(e) => StepOutcome::error(format!(
            "cannot create the workspace {}: {e}",
            job_dir.display()
        )),
        Ok(()) => clone::clone(ctx, &repo_dir, deadline, cancel, sink).await,
    };
    let cloned = steps.record(StepName::Clone, t, cloned);

    let env = StepEnv {
        engine,
        ctx,
        deadline,
        cancel,
        sink,
    };
    let mut tests = None;
    let mut gpu_usage = None;
    let found = if cloned {
        let t = Instant::now();
        let (outcome, found) = preflight_step(&env, tools.gpu, &repo_dir).await;
        steps
            .record(StepName::Preflight, t, outcome)
            .then_some(found)
            .flatten()
    } else {
        steps.not_run(StepName::Preflight, "the clone did not succeed");
        None
    };

    let tag = image_tag(&spec.repo.organization, &spec.repo.name);
    let built = match &found {
        Some(d) => {
            let t = Instant::now();
            let outcome = build::build(
                &env,
                &repo_dir,
                &d.dockerfile,
                &tag,
                &mut cache,
                &mut built_with,
            )
            .await;
            steps.record(StepName::Build, t, outcome)
        }
        None => {
            let why = if cloned {
                "the preflight did not pass"
            } else {
                "the clone did not succeed"
            };
            steps.not_run(StepName::Build, why);
            false
        }
    };

    match found.as_ref().map(|d| (d, &d.plan)) {
        Some((d, discover::Plan::Server { tests: cases })) if built => {
            let t = Instant::now();
            let tested = serve::test(&env, &tag, d, cases, tools.gpu, &mut scanner).await;
            gpu_usage = tested.usage;
            tests = Some(tested.report);
            steps.record(StepName::Test, t, tested.outcome);
        }
        Some((d, discover::Plan::RunToExit)) if built => {
            let t = Instant::now();
            let (outcome, usage) = run::run(&env, &tag, &d.env, tools.gpu, &mut scanner).await;
            gpu_usage = usage;
            tests = Some(TestsReport {
                source: d.source.clone(),
                mode: TestMode::RunToExit,
                dockerfile: d.dockerfile.clone(),
                cold_start_seconds: None,
                passed: 0,
                total: 0,
                results: Vec::new(),
                notes: d.notes.clone(),
            });
            steps.record(StepName::Run, t, outcome);
        }
        Some((_, discover::Plan::Server { .. })) => {
            steps.not_run(StepName::Test, "the image was not built");
        }
        _ => steps.not_run(StepName::Run, "the image was not built"),
    }

    if !spec.gpu_required {
        steps.skipped(StepName::Gpu, "the job does not require a GPU");
    } else if !built {
        steps.not_run(StepName::Gpu, "the image was not built");
    } else if steps.stopped() {
        steps.not_run(StepName::Gpu, "the job was stopped");
    } else {
        let t = Instant::now();
        let mut outcome = run::gpu(&env, &tag, &mut gpu).await;
        // The worker's own tests must have used the GPU; a smoke command or CMD run to its
        // exit (no runpod tests) may not, so its use is said but not required.
        let ran_tests = tests.as_ref().is_some_and(|t| t.mode == TestMode::Server);
        if let (true, Some(usage)) = (outcome.ok(), &gpu_usage) {
            match gpu_usage::judge(usage, spec.gpu_must_be_used && ran_tests) {
                Ok(said) => outcome.detail = format!("{}; {said}", outcome.detail),
                Err(why) => outcome = StepOutcome::failed(why),
            }
        }
        steps.record(StepName::Gpu, t, outcome);
    }

    match &spec.agent_image {
        None => steps.skipped(StepName::Agent, "no agent image configured"),
        Some(_) if !cloned => steps.not_run(StepName::Agent, "the clone did not succeed"),
        Some(_) if steps.stopped() => steps.not_run(StepName::Agent, "the job was stopped"),
        Some(image) => {
            let t = Instant::now();
            let input = agent::AgentInput {
                image,
                repo_dir: &repo_dir,
                io_dir: &io_dir,
                steps: &steps.list,
            };
            let (outcome, output) = agent::run_agent(&env, tools.registry, &input).await;
            agent_output = output;
            steps.record(StepName::Agent, t, outcome);
        }
    }

    let errors = scanner.into_lines();
    let finished_at = OffsetDateTime::now_utc();
    let (status, reason) = verdict::verdict(&steps.list, &errors);
    if let Err(e) = tokio::fs::remove_dir_all(&job_dir).await {
        tracing::warn!(path = %job_dir.display(), error = %e, "could not remove the job workspace");
    }
    let duration = (finished_at - started_at).as_seconds_f64().max(0.0);
    Report {
        schema: REPORT_SCHEMA,
        job_id: ctx.job.job_id.clone(),
        run_id: ctx.job.run_id.clone(),
        repo: spec.repo.clone(),
        prompt: spec.prompt.clone(),
        gpu_required: spec.gpu_required,
        status,
        reason,
        attempt: ctx.attempt,
        steps: steps.list,
        timings: Timings {
            enqueued_at: ctx.job.enqueued_at,
            started_at,
            finished_at,
            queue_wait_seconds: round_ms(
                (started_at - ctx.job.enqueued_at)
                    .try_into()
                    .unwrap_or_default(),
            ),
            duration_seconds: round_ms(Duration::from_secs_f64(duration)),
        },
        errors,
        logs: ctx.log_ref.clone(),
        instance: ctx.instance.clone(),
        gpu,
        tests,
        gpu_usage,
        build: built_with,
        cache,
        disk: DiskInfo {
            path: ctx.work_root.display().to_string(),
            free_before_bytes: free_before,
            free_after_bytes: disk::free_bytes(&ctx.work_root),
            free_inodes_after: disk::disk(&ctx.work_root).map(|d| d.free_inodes),
        },
        estimated_cost_usd: janitor_model::pricing::cost_usd(&ctx.instance.instance_type, duration),
        output: None,
        agent: agent_output,
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The `preflight` step: what the repository says about its tests and needs, checked against
/// this instance. A tests file that does not parse is the repository's failure; a mismatch with
/// the instance is an `error`.
async fn preflight_step<E: ContainerEngine>(
    env: &StepEnv<'_, E>,
    gpu: &dyn GpuProbe,
    repo_dir: &std::path::Path,
) -> (StepOutcome, Option<discover::Discovered>) {
    let spec = &env.ctx.job.spec;
    let found = match discover::discover(repo_dir, spec) {
        Ok(d) => d,
        Err(e) => return (StepOutcome::failed(e), None),
    };
    for note in &found.notes {
        env.sink.line(&format!("[preflight] {note}"));
    }
    let base_image = match std::fs::read_to_string(repo_dir.join(&found.dockerfile)) {
        Ok(text) => match preflight::base_image(&text) {
            Some(image) => env.engine.image(&image).await.map(|f| (image, f.env)),
            None => None,
        },
        Err(_) => None,
    };
    let facts = preflight::Facts {
        gpu_required: spec.gpu_required,
        driver_cuda: if spec.gpu_required {
            gpu.inventory().cuda_version
        } else {
            None
        },
        base_image,
        free_bytes: disk::free_bytes(&env.ctx.work_root),
        disk_path: env.ctx.work_root.display().to_string(),
    };
    match preflight::check(&found, &facts) {
        Ok(detail) => (StepOutcome::succeeded(detail), Some(found)),
        Err(e) => (StepOutcome::error(e), None),
    }
}

/// A report for a job whose pipeline could not produce one (its task panicked).
pub fn bare_report(ctx: &JobContext, status: JobStatus, reason: String) -> Report {
    let job = JobIdentity {
        job_id: ctx.job.job_id.clone(),
        run_id: ctx.job.run_id.clone(),
        repo: ctx.job.spec.repo.clone(),
        prompt: ctx.job.spec.prompt.clone(),
        gpu_required: ctx.job.spec.gpu_required,
        enqueued_at: ctx.job.enqueued_at,
        attempt: ctx.attempt,
    };
    let mut report = Report::without_steps(
        job,
        ctx.instance.clone(),
        status,
        reason,
        env!("CARGO_PKG_VERSION"),
    );
    report.logs = ctx.log_ref.clone();
    report
}
