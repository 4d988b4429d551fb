//! One job, start to end: `clone`, one validation (`preflight` → `build` → `test` or `run` →
//! `gpu`), and, when it failed and an agent is configured, the fix loop (`agent`, then the
//! changed tree validated again); each step calls the services it needs (the container
//! engine, the registry login, the GPUs, the log sink) and returns one
//! [`steps::StepOutcome`]; the result is the job's report. Shared by `janitord` and `janitorctl run --local`; it never
//! talks to AWS and always returns a report.

pub mod agent;
pub mod build;
pub mod clone;
pub mod context;
pub mod discover;
pub mod dockerfile;
pub mod files;
pub mod fix;
pub mod git;
pub mod gpu_usage;
pub mod http;
pub mod preflight;
pub mod publish;
pub mod run;
pub mod scan;
pub mod serve;
pub mod status;
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

/// What one validation of the checkout found: preflight, build, the tests or the run, the
/// GPU check. Its steps are recorded into the `Steps` it is given.
struct Validation {
    tests: Option<TestsReport>,
    gpu_usage: Option<janitor_model::report::GpuUsage>,
    gpu: Option<janitor_model::report::GpuInfo>,
    built_with: Option<janitor_model::report::BuildReport>,
    cache: CacheInfo,
    errors: janitor_model::report::ErrorLines,
    /// What the preflight found the checkout says (its tests); `None` when it did not pass.
    found: Option<discover::Discovered>,
    /// What a change did to the tests of `before` (see [`discover::keep_tests`]).
    tests_changed: Vec<String>,
}

/// One validation of the checkout. `before` is the first validation's discovery when this one
/// judges a change: its tests judge the change, not the changed tests.
async fn validate<E: ContainerEngine, R: RegistryAuth>(
    tools: &Tools<'_, E, R>,
    env: &StepEnv<'_, E>,
    repo_dir: &std::path::Path,
    steps: &mut Steps,
    cloned: bool,
    before: Option<&discover::Discovered>,
) -> Validation {
    let spec = &env.ctx.job.spec;
    let mut scanner = scan::ErrorScanner::new(&spec.expected_errors);
    let mut v = Validation {
        tests: None,
        gpu_usage: None,
        gpu: None,
        built_with: None,
        cache: CacheInfo::default(),
        errors: Default::default(),
        found: None,
        tests_changed: Vec::new(),
    };
    let found = if cloned {
        let t = Instant::now();
        let (outcome, found) = preflight_step(env, tools.gpu, repo_dir, before).await;
        let found = found.map(|(d, changed)| {
            v.tests_changed = changed;
            d
        });
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
                env,
                repo_dir,
                &d.dockerfile,
                &tag,
                &mut v.cache,
                &mut v.built_with,
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
            let tested = serve::test(env, &tag, d, cases, tools.gpu, &mut scanner).await;
            v.gpu_usage = tested.usage;
            v.tests = Some(tested.report);
            steps.record(StepName::Test, t, tested.outcome);
        }
        Some((d, discover::Plan::RunToExit)) if built => {
            let t = Instant::now();
            let (outcome, usage) = run::run(env, &tag, &d.env, tools.gpu, &mut scanner).await;
            v.gpu_usage = usage;
            v.tests = Some(TestsReport {
                source: d.source.clone(),
                mode: TestMode::RunToExit,
                dockerfile: d.dockerfile.clone(),
                cold_start_seconds: None,
                passed: 0,
                total: 0,
                results: Vec::new(),
                notes: d.notes.clone(),
                realtime_port: None,
                sdk_version: None,
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
        let mut outcome = run::gpu(env, &tag, &mut v.gpu).await;
        // The worker's own tests must have used the GPU; a smoke command or CMD run to its
        // exit (no runpod tests) may not, so its use is said but not required.
        let ran_tests = v.tests.as_ref().is_some_and(|t| t.mode == TestMode::Server);
        if let (true, Some(usage)) = (outcome.ok(), &v.gpu_usage) {
            match gpu_usage::judge(usage, spec.gpu_must_be_used && ran_tests) {
                Ok(said) => outcome.detail = format!("{}; {said}", outcome.detail),
                Err(why) => outcome = StepOutcome::failed(why),
            }
        }
        steps.record(StepName::Gpu, t, outcome);
    }
    v.errors = scanner.into_lines();
    v.found = found;
    v
}

/// Runs the job and returns its report. Never panics on the job's input; an engine that cannot
/// be reached fails the step that needed it.
#[tracing::instrument(name = "pipeline", skip_all, fields(job_id = %ctx.job.job_id, repo = %ctx.job.spec.repo.full_name()))]
pub async fn run_job<E: ContainerEngine, R: RegistryAuth>(
    tools: &Tools<'_, E, R>,
    ctx: &JobContext,
    cancel: &CancellationToken,
) -> Report {
    // Every line is redacted first; the tail the agent is given is kept after that.
    let redactor = ctx.redactor();
    let recent = fix::Recent::new(tools.sink);
    let redacted = fix::Redacted {
        inner: &recent,
        redactor: &redactor,
    };
    let sink: &dyn LogSink = &redacted;
    let tools = &Tools {
        engine: tools.engine,
        registry: tools.registry,
        gpu: tools.gpu,
        sink,
    };
    let engine = tools.engine;
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let spec = &ctx.job.spec;
    let deadline = clock + spec.timeout;
    let job_dir = ctx.work_root.join(&ctx.job.job_id);
    // The work tree and its git directory side by side: only the tree is ever mounted.
    let checkout = git::Repo::for_job(&job_dir, deadline);
    let repo_dir = checkout.work_tree.clone();
    let io_dir = job_dir.join("janitor");
    let free_before = disk::free_bytes(&ctx.work_root);
    let mut steps = Steps::default();

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
    // The commit validated (a local directory copied is no git repository: none).
    let commit = if cloned {
        checkout
            .run(&["rev-parse", "HEAD"])
            .await
            .ok()
            .map(|o| o.trim().to_string())
            .filter(|c| c.len() == 40 && c.chars().all(|ch| ch.is_ascii_hexdigit()))
    } else {
        None
    };

    let env = StepEnv {
        engine,
        ctx,
        deadline,
        cancel,
        sink,
    };
    let first = validate(tools, &env, &repo_dir, &mut steps, cloned, None).await;
    let (mut status, mut reason) = verdict::verdict(&steps.list, &first.errors);
    let first_reason = reason.clone();

    let mut fixed = None;
    let mut agent_output = None;
    let mut model_cost = None;
    let always = spec.agent.mode == janitor_model::config::AgentMode::Always;
    let agent_image = spec.agent_image_or(ctx.agent_limits.default_image.as_deref());
    match &agent_image {
        None if spec.agent.mode == janitor_model::config::AgentMode::Never => {
            steps.skipped(StepName::Agent, "`agent: never`")
        }
        None => steps.skipped(StepName::Agent, "no agent image configured"),
        Some(_) if !cloned => steps.not_run(StepName::Agent, "the clone did not succeed"),
        Some(_) if steps.stopped() => steps.not_run(StepName::Agent, "the job was stopped"),
        Some(_) if status == JobStatus::Succeeded && !always => steps.skipped(
            StepName::Agent,
            "the validation passed: nothing to fix (`agent: always` runs the prompt on a passing repository)",
        ),
        Some(_) if status != JobStatus::Failed && status != JobStatus::Succeeded => steps
            .not_run(
                StepName::Agent,
                "the failure is the instance's, not the repository's: the job is tried again",
            ),
        Some(image) => {
            let t = Instant::now();
            let mode = if status == JobStatus::Succeeded {
                fix::Mode::Change
            } else {
                fix::Mode::Fix
            };
            let failure = fix::Failure {
                status,
                reason: reason.clone(),
                steps: steps.list.clone(),
                tests: first.tests.clone(),
                errors: first.errors.first.clone(),
            };
            let before = match mode {
                fix::Mode::Fix => failure.reason.clone().unwrap_or_default(),
                fix::Mode::Change => fix::passed_summary(first.tests.as_ref()),
            };
            let work = AgentWork {
                image,
                checkout: &checkout,
                io_dir: &io_dir,
                mode,
                tests_before: first.found.as_ref(),
            };
            let mut ended = fix_loop(tools, &env, &work, failure, &recent).await;
            let leaks = ended
                .report
                .patch_text
                .as_deref()
                .is_some_and(|p| redactor.leaks(p));
            if leaks {
                ended.report.patch_text = None;
                ended.report.patch_error = Some(
                    "the change contains a secret's value: it is neither kept nor published".into(),
                );
            }
            if matches!(ended.status, JobStatus::Fixed | JobStatus::Changed) && !leaks {
                match (&ctx.publish, spec.publish) {
                    (Some(settings), true) => {
                        let last = ended.report.attempts.last();
                        let after = fix::passed_summary(last.and_then(|a| a.tests.as_ref()));
                        let tests_note = last
                            .filter(|a| !a.tests_changed.is_empty())
                            .map(|a| format!("The change {}; it was judged by the tests as they were before it.", a.tests_changed.join(", ")));
                        publish::publish(
                            settings,
                            ctx,
                            &checkout,
                            &redactor,
                            &mut ended.report,
                            &publish::Story {
                                mode,
                                before: &before,
                                after: &after,
                                tests_note: tests_note.as_deref(),
                            },
                        )
                        .await;
                    }
                    (None, true) => {
                        ended.report.pr_error = Some(
                            "no GitHub token on this instance: the change is kept as a patch"
                                .into(),
                        );
                    }
                    (_, false) => {}
                }
            }
            agent_output = ended.report.attempts.last().and_then(|a| a.result.clone());
            model_cost = fix::model_cost(&ended.report.attempts);
            let outcome = match ended.report.attempts.last() {
                Some(a) => StepOutcome {
                    status: a.agent.status,
                    exit_code: a.agent.exit_code,
                    detail: format!(
                        "{} attempt(s) of {}; the last {}",
                        ended.report.attempts.len(),
                        ended.report.max_attempts,
                        a.agent.detail
                    ),
                },
                None => StepOutcome::failed("the agent did not run"),
            };
            steps.record(StepName::Agent, t, outcome);
            status = ended.status;
            reason = ended.reason;
            fixed = Some(ended.report);
        }
    }

    // The verdict on the commit, where the repository asks for it.
    let statuses = match (&ctx.publish, spec.report_status == Some(true)) {
        (Some(settings), true) => {
            let planned = status::plan(
                commit.as_deref(),
                status,
                first_reason.as_deref(),
                first.tests.as_ref(),
                fixed.as_ref().and_then(|f| f.head_commit.as_deref()),
                &redactor,
            );
            let target = settings.status_target_url.as_ref().map(|u| {
                u.replace("{run_id}", &ctx.job.run_id)
                    .replace("{job_id}", &ctx.job.job_id)
            });
            status::post(
                settings,
                &spec.repo.organization,
                &spec.repo.name,
                planned,
                target,
            )
            .await
        }
        (None, true) => vec![janitor_model::report::PostedStatus {
            commit: commit.clone().unwrap_or_default(),
            state: String::new(),
            description: String::new(),
            target_url: None,
            outcome: "failed".to_string(),
            error: Some("no GitHub token on this instance: no commit status".to_string()),
        }],
        (_, false) => Vec::new(),
    };
    let finished_at = OffsetDateTime::now_utc();
    // The agent's files are taken back after each attempt; a tree cut short is taken back here.
    let dir = job_dir.clone();
    let _ = tokio::task::spawn_blocking(move || disk::reclaim_tree(&dir)).await;
    if let Err(e) = tokio::fs::remove_dir_all(&job_dir).await {
        tracing::warn!(path = %job_dir.display(), error = %e, "could not remove the job workspace");
    }
    let duration = (finished_at - started_at).as_seconds_f64().max(0.0);
    let report = Report {
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
        errors: first.errors,
        logs: ctx.log_ref.clone(),
        instance: ctx.instance.clone(),
        gpu: first.gpu,
        tests: first.tests,
        gpu_usage: first.gpu_usage,
        build: first.built_with,
        cache: first.cache,
        disk: DiskInfo {
            path: ctx.work_root.display().to_string(),
            free_before_bytes: free_before,
            free_after_bytes: disk::free_bytes(&ctx.work_root),
            free_inodes_after: disk::disk(&ctx.work_root).map(|d| d.free_inodes),
        },
        estimated_cost_usd: janitor_model::pricing::cost_usd(&ctx.instance.instance_type, duration),
        model_cost_usd: model_cost,
        output: None,
        agent: agent_output,
        fix: fixed,
        commit,
        statuses,
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    redact_report(report, &redactor, ctx)
}

/// The report with the job's secrets redacted from every string in it (an error line, a
/// test's output, the agent's answer), string by string on its value tree; the patch was
/// checked before and is kept as it is. Fails closed: a report that cannot be redacted is
/// replaced by a bare one that says so.
fn redact_report(
    report: Report,
    redactor: &janitor_services::secrets::Redactor,
    ctx: &JobContext,
) -> Report {
    if redactor.is_empty() {
        return report;
    }
    let patch = report.fix.as_ref().and_then(|f| f.patch_text.clone());
    match redactor.redact_document(&report) {
        Ok(mut clean) => {
            if let Some(f) = clean.fix.as_mut() {
                f.patch_text = patch;
            }
            clean
        }
        Err(e) => {
            tracing::error!(error = %e, "the report could not be redacted; a bare one is stored");
            bare_report(
                ctx,
                JobStatus::Error,
                format!("the report could not be redacted and was withheld: {e}"),
            )
        }
    }
}

/// The agent's rounds: each gets the failure, and a change it leaves is validated again.
/// What the agent's rounds work with: its image, the checkout, the directory its `/janitor`s
/// are made in, and what it is asked to do.
struct AgentWork<'a> {
    image: &'a str,
    checkout: &'a git::Repo,
    io_dir: &'a std::path::Path,
    mode: fix::Mode,
    /// The first validation's discovery: its tests judge every change.
    tests_before: Option<&'a discover::Discovered>,
}

async fn fix_loop<E: ContainerEngine, R: RegistryAuth>(
    tools: &Tools<'_, E, R>,
    env: &StepEnv<'_, E>,
    work: &AgentWork<'_>,
    first: fix::Failure,
    recent: &fix::Recent<'_>,
) -> fix::Ended {
    let AgentWork {
        image,
        checkout,
        io_dir,
        mode,
        tests_before,
    } = *work;
    let ctx = env.ctx;
    let repo_dir = checkout.work_tree.as_path();
    let max = ctx.job.spec.max_fix_attempts;
    let mut attempts: Vec<janitor_model::report::FixAttempt> = Vec::new();
    let mut patch = None;
    if let Err(e) = fix::baseline(checkout).await {
        tracing::warn!(error = %e, "no baseline commit for the agent's changes");
    }
    let mut failure = first.clone();
    for n in 1..=max {
        if env.cancel.is_cancelled() || Instant::now() >= env.deadline {
            break;
        }
        let budget = fix::budget_left(ctx.job.spec.agent.budget_cents, &attempts);
        if budget <= 0.0 {
            env.sink.line(&format!(
                "[agent] the model budget of ${:.2} is spent: no attempt {n}",
                f64::from(ctx.job.spec.agent.budget_cents) / 100.0
            ));
            break;
        }
        let job = fix::job_document(
            ctx,
            &fix::Round {
                attempt: n,
                max_attempts: max,
                mode,
                budget_usd: budget,
            },
            &failure,
            &recent.tail(),
            &attempts,
        );
        let input = agent::AgentInput {
            image,
            repo_dir,
            io_root: io_dir,
            job: &job,
            attempt: n,
        };
        let t = Instant::now();
        let (mut outcome, result) = agent::run_agent(env, tools.registry, &input).await;
        if outcome.ok() {
            // What the agent left is bounded before git reads it (a sparse 64 GB file is a
            // refusal naming it, not hours of hashing).
            let dir = repo_dir.to_path_buf();
            let size =
                tokio::task::spawn_blocking(move || disk::tree_bytes(&dir, disk::MAX_TREE_BYTES))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
            if let Err(e) = size {
                outcome = StepOutcome::failed(format!("the agent's workspace is too large: {e}"))
                    .with_code(outcome.exit_code);
            }
        }
        let answered_unfixable = result
            .as_ref()
            .and_then(|r| r.get("status"))
            .and_then(|s| s.as_str())
            == Some("unfixable");
        let change = if outcome.ok() {
            match fix::change(checkout).await {
                Ok(c) => c,
                Err(e) => {
                    outcome = StepOutcome::failed(format!("the agent's change is refused: {e}"))
                        .with_code(outcome.exit_code);
                    None
                }
            }
        } else {
            None
        };
        let agent_step = janitor_model::report::StepReport {
            name: StepName::Agent,
            status: outcome.status,
            duration_seconds: round_ms(t.elapsed()),
            exit_code: outcome.exit_code,
            detail: outcome.detail.clone(),
            output: None,
        };
        let mut attempt = janitor_model::report::FixAttempt {
            attempt: n,
            agent: agent_step,
            result,
            changed: change.is_some(),
            steps: Vec::new(),
            tests: None,
            status: None,
            reason: None,
            tests_changed: Vec::new(),
        };
        if !outcome.ok() || change.is_none() || answered_unfixable {
            attempts.push(attempt);
            break;
        }
        env.sink.line(&format!(
            "[agent] attempt {n} of {max} changed the checkout; validating it again"
        ));
        let mut again = Steps::default();
        let v = validate(tools, env, repo_dir, &mut again, true, tests_before).await;
        let (status, reason) = verdict::verdict(&again.list, &v.errors);
        attempt.tests_changed = v.tests_changed.clone();
        attempt.steps = again.list.clone();
        attempt.tests = v.tests.clone();
        attempt.status = Some(status);
        attempt.reason = reason.clone();
        attempts.push(attempt);
        if status != JobStatus::Failed {
            patch = change.filter(|_| status == JobStatus::Succeeded);
            break;
        }
        failure = fix::Failure {
            status,
            reason,
            steps: again.list,
            tests: v.tests,
            errors: v.errors.first,
        };
    }
    fix::conclude(&first, attempts, max, patch, mode)
}

/// The `preflight` step: what the repository says about its tests and needs, checked against
/// this instance. A tests file that does not parse is the repository's failure; a mismatch with
/// the instance is an `error`.
async fn preflight_step<E: ContainerEngine>(
    env: &StepEnv<'_, E>,
    gpu: &dyn GpuProbe,
    repo_dir: &std::path::Path,
    before: Option<&discover::Discovered>,
) -> (StepOutcome, Option<(discover::Discovered, Vec<String>)>) {
    let spec = &env.ctx.job.spec;
    // The repository's files are read off the async threads and given up at the deadline.
    let (repo, job) = (repo_dir.to_path_buf(), spec.clone());
    let discovered =
        files::by_deadline(env.deadline, "reading the repository's tests", move || {
            discover::discover(&repo, &job)
        })
        .await;
    let late =
        || StepOutcome::stopped(janitor_services::engine::StopReason::Deadline, spec.timeout);
    let mut found = match discovered {
        Ok(d) => d,
        Err(_) if Instant::now() >= env.deadline => return (late(), None),
        Err(e) => return (StepOutcome::failed(e), None),
    };
    // A change is judged by the tests as they were before it.
    let mut tests_changed = Vec::new();
    if let Some(before) = before {
        (found, tests_changed) = discover::keep_tests(before, found);
    }
    if let Err(e) = fill_secrets(&mut found.env, spec, &env.ctx.secrets) {
        return (StepOutcome::failed(e), None);
    }
    for note in &found.notes {
        env.sink.line(&format!("[preflight] {note}"));
    }
    let dockerfile = files::read_text_by(
        repo_dir,
        &found.dockerfile,
        files::MAX_DOCKERFILE_BYTES,
        env.deadline,
    )
    .await;
    let base_image = match dockerfile {
        Ok(Some(text)) => match preflight::base_image(&text) {
            Some(image) => env.engine.image(&image).await.map(|f| (image, f.env)),
            None => None,
        },
        // No Dockerfile: the build step says so, with the setting to change.
        Ok(None) => None,
        Err(files::FileError::Deadline { .. }) => return (late(), None),
        Err(e) => return (StepOutcome::failed(e.to_string()), None),
    };
    let inventory = spec.gpu_required.then(|| gpu.inventory());
    let facts = preflight::Facts {
        gpu_required: spec.gpu_required,
        driver_cuda: inventory.as_ref().and_then(|i| i.cuda_version.clone()),
        gpu: inventory.as_ref().and_then(|i| {
            i.devices
                .iter()
                .min_by_key(|d| d.memory_total_mib)
                .map(|d| (d.name.clone(), d.memory_total_mib))
        }),
        gpu_count: inventory
            .as_ref()
            .filter(|i| i.unavailable.is_none())
            .map(|i| i.count),
        instance_type: env.ctx.instance.instance_type.clone(),
        base_image,
        free_bytes: disk::free_bytes(&env.ctx.work_root),
        disk_path: env.ctx.work_root.display().to_string(),
    };
    match preflight::check(&found, &facts) {
        Ok(detail) => (StepOutcome::succeeded(detail), Some((found, tests_changed))),
        Err(e) => (StepOutcome::error(e), None),
    }
}

/// The worker's environment with each `NAME=secret:SECRET` value of the config's `env:`
/// replaced by the job's secret of that name; one the job's `secrets:` do not name, or the
/// publish token, is the configuration's error. A `secret:` value from a repository file
/// (tests.json, hub.json) is not a reference: the repository cannot ask for secrets, and the
/// worker gets the text as written.
fn fill_secrets(
    env: &mut [String],
    spec: &janitor_model::config::JobSpec,
    secrets: &janitor_services::secrets::SecretValues,
) -> Result<(), String> {
    use janitor_model::audience::{may_see, Audience, PUBLISH_TOKEN};
    for entry in env.iter_mut() {
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        let Some(name) = value.strip_prefix("secret:") else {
            continue;
        };
        let from_config = spec.env.iter().any(|(k, v)| k == key && v == value);
        if !from_config {
            continue;
        }
        if name == PUBLISH_TOKEN {
            return Err(format!(
                "env `{key}` asks for {PUBLISH_TOKEN}, the token that publishes fixes: it is never given to the worker"
            ));
        }
        let Some(v) = secrets
            .get(name)
            .filter(|_| may_see(name, spec, Audience::Worker))
        else {
            return Err(format!(
                "env `{key}` asks for the secret `{name}`, which the job's `secrets:` do not name"
            ));
        };
        *entry = format!("{key}={v}");
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    #[test]
    fn env_values_name_secrets() {
        let secrets = janitor_services::secrets::SecretValues::new(vec![(
            "HF_TOKEN".into(),
            "hf_value".into(),
        )]);
        let repo = janitor_model::config::RepoRef {
            organization: "o".into(),
            name: "w".into(),
            url: None,
            git_ref: None,
        };
        let mut spec =
            janitor_model::config::JobSpec::new(repo, std::time::Duration::from_secs(60));
        spec.secrets = vec![
            ("HF_TOKEN".into(), "ssm:/janitor/hf".into()),
            ("GITHUB_TOKEN".into(), "ssm:/janitor/gh".into()),
        ];
        spec.env = vec![
            ("HF_TOKEN".into(), "secret:HF_TOKEN".into()),
            ("K".into(), "secret:NOPE".into()),
            ("T".into(), "secret:GITHUB_TOKEN".into()),
        ];
        // From the config: filled. From a repository file (not in the config's env): as written.
        let mut env = vec![
            "A=1".to_string(),
            "HF_TOKEN=secret:HF_TOKEN".to_string(),
            "FROM_REPO=secret:HF_TOKEN".to_string(),
        ];
        super::fill_secrets(&mut env, &spec, &secrets).unwrap();
        assert_eq!(
            env,
            ["A=1", "HF_TOKEN=hf_value", "FROM_REPO=secret:HF_TOKEN"]
        );
        let mut bad = vec!["K=secret:NOPE".to_string()];
        assert_eq!(
            super::fill_secrets(&mut bad, &spec, &secrets).unwrap_err(),
            "env `K` asks for the secret `NOPE`, which the job's `secrets:` do not name"
        );
        let mut publish = vec!["T=secret:GITHUB_TOKEN".to_string()];
        assert!(super::fill_secrets(&mut publish, &spec, &secrets)
            .unwrap_err()
            .contains("never given to the worker"));
    }
}
