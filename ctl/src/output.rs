//! What janitorctl prints for people: summaries, progress, and the results in seed 002's shape.
//! The `--json` forms serialise the same views.

use std::time::Duration;

use janitor_model::config::WorkersConfig;
use janitor_model::duration;
use janitor_model::report::{
    JobStatus, Report, StepName, StepStatus, TestMode, TestStatus, TestsReport,
};
use time::OffsetDateTime;

use crate::fleet::{GroupView, QueueDepth};
use crate::ledger::{JobState, JobView, RunView};
use crate::query::PoolStatus;
use crate::term::line;

/// One line saying what a valid config holds.
pub fn summary(cfg: &WorkersConfig) -> String {
    let gpu = cfg.repositories.iter().filter(|r| r.gpu_required).count();
    let longest = cfg
        .repositories
        .iter()
        .map(|r| r.timeout)
        .max()
        .unwrap_or_default();
    format!(
        "{}: valid: {} repositories ({} need a GPU), longest timeout {}, at most {} instances",
        cfg.path.display(),
        cfg.repositories.len(),
        gpu,
        duration::format(longest),
        cfg.max_concurrent_instances
    )
}

/// How each repository's agent runs and reaches a model, one line per distinct setting:
/// `agent for worker-a, worker-b: on_failure, model: an API key (ANTHROPIC_API_KEY from
/// secretsmanager:janitor/anthropic), default endpoint, default model`. Empty when no
/// repository has an agent.
pub fn agent_summary(cfg: &WorkersConfig) -> String {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for r in &cfg.repositories {
        let Some(image) = r.agent_image_or(Some("the instances' default agent, janitor's own"))
        else {
            continue;
        };
        let access = match r.secrets.iter().find(|(n, _)| n == "ANTHROPIC_API_KEY") {
            Some((n, reference)) => format!("an API key ({n} from {reference})"),
            None => "Amazon Bedrock with the instances' short-lived agent-role credentials (infra `agent_bedrock_models`); without them the agent reaches no model".to_string(),
        };
        let line = format!(
            "{} ({image}), model: {access}, {}, {}, at most {} turns per attempt and ${:.2} per job",
            r.agent.mode.as_str(),
            r.agent
                .api_url
                .as_deref()
                .map_or("default endpoint".to_string(), |u| format!("endpoint {u}")),
            r.agent
                .model
                .as_deref()
                .map_or("default model".to_string(), |m| format!("model {m}")),
            r.agent.max_turns,
            f64::from(r.agent.budget_cents) / 100.0,
        );
        match groups.iter_mut().find(|(l, _)| *l == line) {
            Some((_, names)) => names.push(&r.repo.name),
            None => groups.push((line, vec![&r.repo.name])),
        }
    }
    groups
        .iter()
        .map(|(line, names)| format!("agent for {}: {line}", names.join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The word seed 002 prints for a status.
pub fn status_word(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Succeeded => "success",
        other => other.as_str(),
    }
}

/// `2024-01-15 14:30:00 UTC`
pub fn when(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `30 minutes`, `1 minute`
pub fn minutes(d: Duration) -> String {
    let m = d.as_secs().div_ceil(60);
    if m == 1 {
        "1 minute".to_string()
    } else {
        format!("{m} minutes")
    }
}

/// `22 minutes 15 seconds`
pub fn long_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s} seconds"),
        (m, 0) => format!("{m} minutes"),
        (m, s) => format!("{m} minutes {s} seconds"),
    }
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0))
}

/// `passed 3/3 tests` for a success that ran the worker's tests (a failure's reason names the
/// first failing test already).
fn tests_note(tests: Option<&TestsReport>) -> Option<String> {
    tests
        .filter(|t| t.mode == TestMode::Server)
        .map(TestsReport::summary)
}

/// One line per test, indented: `    ✓ basic_test (0.9 s)`, `    ✗ slow (30.0 s) — why`.
pub fn test_lines(tests: &TestsReport) -> String {
    let mut out = String::new();
    if tests.mode != TestMode::Server {
        return out;
    }
    // Grouped tests (`.github/tests.json` templates) ran in different workers: each change of
    // command or environment is said once, above its tests.
    let grouped = tests.results.iter().any(|t| {
        t.command_from
            .as_deref()
            .is_some_and(|f| f.contains("templateConfig"))
    }) || tests.results.iter().any(|t| {
        t.env_from
            .as_deref()
            .is_some_and(|f| f.contains("templateConfig"))
    });
    let mut last: Option<(&Option<String>, &Option<String>)> = None;
    for t in &tests.results {
        if grouped && last != Some((&t.command, &t.env_from)) {
            last = Some((&t.command, &t.env_from));
            if let Some(c) = &t.command {
                out.push_str(&format!(
                    "  worker `{}` ({}; environment: {})\n",
                    line(c),
                    line(t.command_from.as_deref().unwrap_or("?")),
                    line(t.env_from.as_deref().unwrap_or("?"))
                ));
            }
        }
        let mark = match t.status {
            TestStatus::Passed => "✓",
            TestStatus::NotRun => "–",
            TestStatus::Failed | TestStatus::TimedOut => "✗",
        };
        let word = match t.status {
            TestStatus::Passed => "",
            TestStatus::Failed => " failed",
            TestStatus::TimedOut => " timed out",
            TestStatus::NotRun => " not run",
        };
        out.push_str(&format!(
            "    {mark} {}{word} ({:.1} s)",
            line(&t.name),
            t.duration_seconds
        ));
        if let Some(e) = &t.error {
            out.push_str(&format!(" — {}", line(e)));
        }
        if t.output_matches == Some(false) {
            out.push_str(" [output differs from expectedOutput; reported, not failed]");
        }
        out.push('\n');
    }
    out
}

/// `✓ worker-basic: success (4m32s)`, with the reason on anything else.
pub fn result_row(
    name: &str,
    status: Option<JobStatus>,
    state: JobState,
    took: Option<f64>,
    reason: Option<&str>,
    tests: Option<&TestsReport>,
) -> String {
    match (state, status) {
        (JobState::Finished, Some(status)) => {
            let mark = if status.is_ok() { "✓" } else { "✗" };
            let mut row = format!("{mark} {name}: {}", status_word(status));
            if let Some(t) = took {
                row.push_str(&format!(" ({})", duration::format(secs(t))));
            }
            if let Some(r) = reason.filter(|_| status != JobStatus::Succeeded) {
                row.push_str(" — ");
                row.push_str(&line(r));
            } else if let Some(note) = tests_note(tests).filter(|_| status == JobStatus::Succeeded)
            {
                row.push_str(" — ");
                row.push_str(&note);
            }
            row
        }
        (JobState::Running, _) => format!("⏳ {name}: still running"),
        _ => format!("⏳ {name}: still queued"),
    }
}

pub fn result_line(report: &Report) -> String {
    let mut line = result_row(
        &report.repo.name,
        Some(report.status),
        JobState::Finished,
        Some(report.timings.duration_seconds),
        report.reason.as_deref(),
        report.tests.as_ref(),
    );
    line = with_pr(line, &report.repo.name, report);
    line.push_str(&output_note(report));
    line.push_str(&model_note(report));
    line
}

/// ` [model $0.42]`: what the agent's model calls cost, when it ran.
fn model_note(report: &Report) -> String {
    report
        .model_cost_usd
        .map(|m| format!(" [model ${m:.2}]"))
        .unwrap_or_default()
}

/// `✓ worker-x: fixed (PR #12)`: the pull request of a published fix (or change).
fn with_pr(line: String, name: &str, report: &Report) -> String {
    let number = report
        .fix
        .as_ref()
        .and_then(|f| f.pr_url.as_deref())
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()));
    let word = status_word(report.status);
    match number {
        Some(n) => line.replacen(
            &format!("{name}: {word}"),
            &format!("{name}: {word} (PR #{n})"),
            1,
        ),
        None => line,
    }
}

/// ` [N of M output events not in CloudWatch…]` when some are not, else nothing.
fn output_note(report: &Report) -> String {
    let Some(o) = &report.output else {
        return String::new();
    };
    let missing = o.dropped_events + o.failed_events;
    if missing == 0 {
        return String::new();
    }
    let whole = if o.archive.is_some() {
        "; janitorctl logs reads it all from the archive"
    } else {
        ""
    };
    format!(
        " [{missing} of {} output events not in CloudWatch{whole}]",
        missing + o.shipped_events
    )
}

/// `clone ✓  preflight ✓  build ✓  test ✗  gpu –  agent –`: the steps the report has, in order
/// (a report of schema 1 has `run` and no `preflight` or `test`).
pub fn steps_line(report: &Report) -> String {
    StepName::ALL
        .iter()
        .filter_map(|name| {
            let mark = match report.step(*name)?.status {
                StepStatus::Succeeded => "✓",
                StepStatus::Failed
                | StepStatus::TimedOut
                | StepStatus::Interrupted
                | StepStatus::Error => "✗",
                StepStatus::Skipped | StepStatus::NotRun => "–",
            };
            Some(format!("{} {mark}", name.as_str()))
        })
        .collect::<Vec<_>>()
        .join("  ")
}

fn overall(ok: usize, total: usize) -> String {
    format!("Overall Status: {ok}/{total} repositories successful")
}

/// The `Results:` block and the `Overall Status` line, for local reports.
pub fn results_table(reports: &[Report]) -> String {
    let mut out = String::from("Results:\n");
    for r in reports {
        out.push_str(&result_line(r));
        out.push('\n');
        if let Some(t) = &r.tests {
            out.push_str(&test_lines(t));
        }
    }
    let ok = reports.iter().filter(|r| r.status.is_ok()).count();
    out.push('\n');
    out.push_str(&overall(ok, reports.len()));
    out
}

fn job_row(j: &JobView) -> String {
    let mut row = result_row(
        j.name(),
        j.status,
        j.state,
        j.duration_seconds,
        j.reason.as_deref(),
        j.tests.as_ref(),
    );
    if let Some(r) = &j.report {
        row = with_pr(row, j.name(), r);
        row.push_str(&output_note(r));
        row.push_str(&model_note(r));
    }
    row
}

/// The `Results:` block of a fleet run.
pub fn run_results(view: &RunView) -> String {
    let mut out = String::from("Results:\n");
    for j in &view.jobs {
        out.push_str(&job_row(j));
        out.push('\n');
        if let Some(t) = j.tests.as_ref().filter(|_| j.state == JobState::Finished) {
            out.push_str(&test_lines(t));
        }
    }
    out.push('\n');
    out.push_str(&overall(view.succeeded(), view.jobs.len()));
    out
}

/// `[██████░░░░] 2/3 done · 1 running · 0 queued · 4m12s elapsed · 25m48s left`
pub fn progress_line(view: &RunView, now: OffsetDateTime) -> String {
    let total = view.jobs.len().max(1);
    let done = view.count(JobState::Finished);
    let width = 20;
    let filled = done * width / total;
    let elapsed = secs((now - view.created_at).as_seconds_f64());
    let left = secs((view.deadline() - now).as_seconds_f64());
    format!(
        "[{}{}] {done}/{} done · {} running · {} queued · {} elapsed · {} left",
        "█".repeat(filled),
        "░".repeat(width - filled),
        view.jobs.len(),
        view.count(JobState::Running),
        view.count(JobState::Queued),
        duration::format(elapsed),
        duration::format(left)
    )
}

/// `just now`, `1 minute ago`, `5 minutes ago`
fn ago(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let d = secs((now - t).as_seconds_f64());
    if d.as_secs() < 60 {
        return "just now".to_string();
    }
    let m = d.as_secs() / 60;
    if m == 1 {
        "1 minute ago".to_string()
    } else {
        format!("{m} minutes ago")
    }
}

/// `make check-parallel-status`: seed 002's shape plus the queue and the instances.
pub fn status_text(view: &RunView, pools: &[PoolStatus], now: OffsetDateTime) -> String {
    let mut out = format!(
        "Parallel Run: {}\nStarted: {}\n",
        view.run_id,
        when(view.created_at)
    );
    let left = view.deadline() - now;
    let timeout = minutes(Duration::from_secs(view.timeout_seconds));
    if view.is_done() {
        out.push_str(&format!("Timeout: {timeout} (run finished)\n\n"));
    } else if left.is_negative() {
        out.push_str(&format!(
            "Timeout: {timeout} (passed {})\n\n",
            ago(view.deadline(), now)
        ));
    } else {
        out.push_str(&format!(
            "Timeout: {timeout} ({} remaining)\n\n",
            minutes(secs(left.as_seconds_f64()))
        ));
    }
    // With jobs in more than one pool, each pool's jobs under its name.
    let mut names: Vec<&str> = view.jobs.iter().filter_map(|j| j.pool.as_deref()).collect();
    names.sort_unstable();
    names.dedup();
    let by_pool = names.len() > 1;
    let mut order: Vec<&JobView> = view.jobs.iter().collect();
    if by_pool {
        order.sort_by_key(|j| j.pool.as_deref().unwrap_or(""));
    }
    let mut heading: Option<&str> = None;
    for j in order {
        if by_pool && heading != j.pool.as_deref() {
            heading = j.pool.as_deref();
            out.push_str(&format!("Pool {}:\n", heading.unwrap_or("?")));
        }
        let line = match (j.state, j.status) {
            (JobState::Finished, Some(s)) => {
                let mark = if s == JobStatus::Succeeded {
                    "✓ completed"
                } else if s == JobStatus::Fixed || s == JobStatus::Changed {
                    "✓"
                } else {
                    "✗"
                };
                let mut l = if s == JobStatus::Succeeded {
                    format!("{}: {mark}", j.name())
                } else {
                    format!("{}: {mark} {}", j.name(), status_word(s))
                };
                if let Some(f) = j.finished_at {
                    l.push_str(&format!(" ({})", ago(f, now)));
                }
                if let Some(r) = j.reason.as_deref().filter(|_| s != JobStatus::Succeeded) {
                    l.push_str(&format!(" — {}", line(r)));
                }
                l
            }
            (JobState::Running, _) => {
                let elapsed = j
                    .started_at
                    .map(|s| minutes(secs((now - s).as_seconds_f64())))
                    .unwrap_or_default();
                format!(
                    "{}: ⏳ running ({elapsed} elapsed, attempt {}, {})",
                    j.name(),
                    j.attempt,
                    j.instance_id.as_deref().unwrap_or("?")
                )
            }
            (_, Some(JobStatus::Interrupted)) => {
                format!("{}: ⏳ queued (retrying after an interruption)", j.name())
            }
            _ => format!("{}: ⏳ queued", j.name()),
        };
        if by_pool {
            out.push_str("  ");
        }
        out.push_str(&line);
        out.push('\n');
    }
    for n in &view.not_run {
        out.push_str(&format!("{}: not run — {}\n", n.name, line(&n.reason)));
    }
    for p in pools {
        out.push('\n');
        if pools.len() > 1 {
            out.push_str(&format!("Pool {} ({}):\n", p.pool, p.instance_type));
        }
        out.push_str(&pool_text(p.queue, p.dead_letter, p.group.as_ref()));
    }
    if pools.is_empty() {
        out.push_str(
            "\nQueue and instances: set the pools (or queue_url and asg_name) to see them\n",
        );
    }
    out
}

/// A pool's queue and instances, for `status`.
fn pool_text(
    queue: Option<QueueDepth>,
    dead_letter: Option<u64>,
    group: Option<&GroupView>,
) -> String {
    let mut out = String::new();
    match (queue, dead_letter) {
        (Some(q), Some(d)) => out.push_str(&format!(
            "Queue: {} waiting, {} in flight; dead-letter queue: {d}\n",
            q.waiting, q.in_flight
        )),
        (Some(q), None) => out.push_str(&format!(
            "Queue: {} waiting, {} in flight (set dlq_url for the dead-letter count)\n",
            q.waiting, q.in_flight
        )),
        _ => {}
    }
    match group {
        Some(g) => {
            out.push_str(&format!(
                "Instances of {} (desired {}, min {}, max {}):",
                g.name, g.desired_capacity, g.min_size, g.max_size
            ));
            if g.instances.is_empty() {
                out.push_str(" none\n");
            } else {
                out.push('\n');
                for i in &g.instances {
                    let protected = if i.protected_from_scale_in {
                        "  busy (protected)"
                    } else {
                        ""
                    };
                    out.push_str(&format!(
                        "  {}  {}  {}{protected}\n",
                        i.instance_id, i.lifecycle_state, i.health
                    ));
                }
            }
        }
        None => out.push_str("Instances: set asg_name to see them\n"),
    }
    out
}

/// `make query-parallel-run`: seed 002's shape.
pub fn show_text(view: &RunView) -> String {
    let mut out = format!(
        "Run ID: {}\nConfiguration: {}\nStarted by: {}\nStarted: {}\n",
        view.run_id,
        view.config_path,
        view.created_by,
        when(view.created_at)
    );
    let timeout = minutes(Duration::from_secs(view.timeout_seconds));
    match view.finished_at() {
        Some(end) => {
            out.push_str(&format!("Completed: {}\n", when(end)));
            out.push_str(&format!(
                "Total Duration: {}\n",
                long_duration(secs((end - view.created_at).as_seconds_f64()))
            ));
        }
        None => out.push_str("Completed: not yet\n"),
    }
    let enforced = view
        .jobs
        .iter()
        .filter(|j| j.status == Some(JobStatus::TimedOut))
        .count();
    if enforced == 0 {
        out.push_str(&format!("Timeout: {timeout} (not enforced)\n"));
    } else {
        out.push_str(&format!(
            "Timeout: {timeout} (enforced on {enforced} job(s))\n"
        ));
    }
    if let Some(c) = view.estimated_cost_usd {
        out.push_str(&format!("Cost estimate: ${c:.2}\n"));
    }
    let reports: Vec<&Report> = view.jobs.iter().filter_map(|j| j.report.as_ref()).collect();
    let instances: f64 = reports.iter().filter_map(|r| r.estimated_cost_usd).sum();
    let model: f64 = reports.iter().filter_map(|r| r.model_cost_usd).sum();
    if !reports.is_empty() {
        out.push_str(&format!(
            "Cost: ${:.2} (instances ${instances:.2}, model ${model:.2})\n",
            instances + model
        ));
    }
    out.push_str(&by_pool(view));
    for n in &view.not_run {
        out.push_str(&format!("Not run: {}: {}\n", n.name, line(&n.reason)));
    }
    out.push('\n');
    out.push_str(&run_results(view));
    out
}

/// Each pool's jobs, how many passed and what its instances cost, when the run used more
/// than one pool: (pool, jobs, passed, instances' cost in USD).
pub fn pool_stats(view: &RunView) -> Vec<(String, usize, usize, f64)> {
    let mut pools: Vec<&str> = view.jobs.iter().filter_map(|j| j.pool.as_deref()).collect();
    pools.sort_unstable();
    pools.dedup();
    if pools.len() < 2 {
        return Vec::new();
    }
    pools
        .into_iter()
        .map(|p| {
            let jobs: Vec<&JobView> = view
                .jobs
                .iter()
                .filter(|j| j.pool.as_deref() == Some(p))
                .collect();
            let passed = jobs
                .iter()
                .filter(|j| j.state == JobState::Finished && j.status.is_some_and(JobStatus::is_ok))
                .count();
            // `+ 0.0`: an empty float sum is -0.0, which prints as `$-0.00`.
            let cost = jobs
                .iter()
                .filter_map(|j| j.report.as_ref()?.estimated_cost_usd)
                .sum::<f64>()
                + 0.0;
            (p.to_string(), jobs.len(), passed, cost)
        })
        .collect()
}

/// `show`'s `By pool:` lines (none for a run in one pool).
pub fn by_pool(view: &RunView) -> String {
    let stats = pool_stats(view);
    if stats.is_empty() {
        return String::new();
    }
    let mut out = String::from("By pool:\n");
    for (p, jobs, passed, cost) in stats {
        out.push_str(&format!(
            "  {p}: {jobs} job(s), {passed} passed, instances ${cost:.2}\n"
        ));
    }
    out
}

/// `make query-db REPO=…`: history, newest first.
pub fn results_text(repo: &str, reports: &[Report]) -> String {
    if reports.is_empty() {
        return format!("Repository: {repo}\nNo results yet.");
    }
    let mut out = format!(
        "Repository: {} ({} result(s), newest first)\n",
        reports[0].repo.full_name(),
        reports.len()
    );
    for r in reports {
        out.push_str(&format!(
            "\n{}  {}  {}  run {}  {}\n  Custom Prompt: \"{}\"\n  {}  ERROR lines: {}\n",
            when(r.timings.finished_at),
            status_word(r.status),
            duration::format(secs(r.timings.duration_seconds)),
            r.run_id,
            r.instance.id,
            line(&r.prompt),
            steps_line(r),
            r.errors.count
        ));
        if let Some(reason) = &r.reason {
            out.push_str(&format!("  Reason: {}\n", line(reason)));
        }
        if let Some(t) = r.tests.as_ref().filter(|t| t.mode == TestMode::Server) {
            out.push_str(&format!("  Tests ({}): {}\n", t.source, t.summary()));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use janitor_model::config::RepoRef;
    use janitor_model::report::{InstanceInfo, JobIdentity};

    /// A run over two pools (`a` on cpu; `b`, failed, and `c` on gpu-24) with one repository
    /// not run for `reason`.
    pub(crate) fn pools_view(reason: &str) -> RunView {
        let mut view = RunView {
            run_id: "20261204T000000Z-pools0".into(),
            config_path: "c.yaml".into(),
            created_by: "t@h".into(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            timeout_seconds: 600,
            max_concurrent_instances: 2,
            estimated_cost_usd: None,
            jobs: vec![
                JobView::finished(&report("a", JobStatus::Succeeded, 10.0, "")),
                JobView::finished(&report("b", JobStatus::Failed, 10.0, "boom")),
                JobView::finished(&report("c", JobStatus::Succeeded, 10.0, "")),
            ],
            not_run: vec![janitor_model::ledger::SkippedRepo {
                name: "acme/huge".into(),
                reason: reason.into(),
            }],
        };
        view.jobs[0].pool = Some("cpu".into());
        view.jobs[1].pool = Some("gpu-24".into());
        view.jobs[2].pool = Some("gpu-24".into());
        view
    }

    /// A finished report for `name` with `status`, `took` seconds and `reason`.
    pub(crate) fn report(name: &str, status: JobStatus, took: f64, reason: &str) -> Report {
        let mut r = Report::without_steps(
            JobIdentity {
                job_id: format!("{name}-1"),
                run_id: "20261201T000000Z-abc123".into(),
                repo: RepoRef {
                    organization: "runpod-workers".into(),
                    name: name.into(),
                    url: None,
                    git_ref: None,
                },
                prompt: "check".into(),
                gpu_required: true,
                enqueued_at: OffsetDateTime::UNIX_EPOCH,
                attempt: 1,
            },
            InstanceInfo {
                id: "i-1".into(),
                instance_type: "g5.xlarge".into(),
                availability_zone: "us-east-1a".into(),
                lifecycle: "on-demand".into(),
            },
            status,
            reason.into(),
            "0",
        );
        r.timings.duration_seconds = took;
        r
    }

    #[test]
    fn the_results_table_names_the_failure_and_counts_successes() {
        let table = results_table(&[
            report("worker-basic", JobStatus::Succeeded, 272.0, ""),
            report(
                "worker-sdxl",
                JobStatus::Failed,
                61.5,
                "build: exited with code 3",
            ),
            report("worker-vllm", JobStatus::TimedOut, 1800.0, "run: stopped"),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "Results:");
        assert_eq!(lines[1], "✓ worker-basic: success (4m32s)");
        assert_eq!(
            lines[2],
            "✗ worker-sdxl: failed (1m01s) — build: exited with code 3"
        );
        assert!(
            lines[3].starts_with("✗ worker-vllm: timed_out"),
            "{}",
            lines[3]
        );
        assert_eq!(
            lines.last().copied(),
            Some("Overall Status: 1/3 repositories successful")
        );
    }

    #[test]
    fn rows_for_unfinished_jobs() {
        let cases = [
            (JobState::Running, None, "⏳ w: still running"),
            (JobState::Queued, None, "⏳ w: still queued"),
            (
                JobState::Finished,
                Some(JobStatus::Interrupted),
                "✗ w: interrupted",
            ),
        ];
        for (state, status, want) in cases {
            assert_eq!(result_row("w", status, state, None, None, None), want);
        }
    }

    #[test]
    fn both_report_versions_read_and_print() {
        let v1: Report = serde_json::from_str(include_str!("../testdata/report-v1.json")).unwrap();
        assert_eq!(v1.schema, 1);
        assert!(v1.tests.is_none());
        assert_eq!(steps_line(&v1), "clone ✓  build ✓  run ✓  gpu –  agent ✓");
        assert_eq!(result_line(&v1), "✓ worker-basic: success (3s)");

        let mut v2 = report("worker-sdxl", JobStatus::Succeeded, 61.0, "");
        v2.tests = Some(TestsReport {
            source: ".runpod/tests.json".into(),
            mode: TestMode::Server,
            dockerfile: "Dockerfile".into(),
            cold_start_seconds: Some(12.5),
            passed: 2,
            total: 2,
            results: vec![
                janitor_model::report::TestResult {
                    name: "basic".into(),
                    status: TestStatus::Passed,
                    duration_seconds: 0.93,
                    http_status: Some(200),
                    error: None,
                    output: Some("{}".into()),
                    ..Default::default()
                },
                janitor_model::report::TestResult {
                    name: "batch".into(),
                    status: TestStatus::Passed,
                    duration_seconds: 4.0,
                    http_status: Some(200),
                    error: None,
                    ..Default::default()
                },
            ],
            notes: Vec::new(),
            realtime_port: None,
            sdk_version: None,
        });
        assert_eq!(
            result_line(&v2),
            "✓ worker-sdxl: success (1m01s) — passed 2/2 tests"
        );
        assert_eq!(
            test_lines(v2.tests.as_ref().unwrap()),
            "    ✓ basic (0.9 s)\n    ✓ batch (4.0 s)\n"
        );
        v2.tests.as_mut().unwrap().results[0].output_matches = Some(false);
        assert_eq!(
            test_lines(v2.tests.as_ref().unwrap()),
            "    ✓ basic (0.9 s) [output differs from expectedOutput; reported, not failed]\n    ✓ batch (4.0 s)\n"
        );
        // Grouped: each worker's command said once, above its tests.
        {
            let t = v2.tests.as_mut().unwrap();
            t.results[0].command = Some("python3 -u /gen.py".into());
            t.results[0].command_from =
                Some(".github/tests.json [0].hardwareConfig.templateConfig.dockerArgs".into());
            t.results[0].env_from = Some("none".into());
            t.results[1].command = Some("python3 -u /handler.py".into());
            t.results[1].command_from = Some("the image's CMD".into());
            t.results[1].env_from = Some("none".into());
            assert_eq!(
                test_lines(t),
                "  worker `python3 -u /gen.py` (.github/tests.json [0].hardwareConfig.templateConfig.dockerArgs; environment: none)\n    ✓ basic (0.9 s) [output differs from expectedOutput; reported, not failed]\n  worker `python3 -u /handler.py` (the image's CMD; environment: none)\n    ✓ batch (4.0 s)\n"
            );
            for r in &mut t.results {
                r.command = None;
                r.command_from = None;
                r.env_from = None;
            }
        }
        v2.tests.as_mut().unwrap().results[0].output_matches = None;
        let t = v2.tests.as_mut().unwrap();
        t.passed = 1;
        t.results[1].status = TestStatus::TimedOut;
        t.results[1].error = Some("no answer within its 300000 ms timeout".into());
        assert_eq!(
            test_lines(t),
            "    ✓ basic (0.9 s)\n    ✗ batch timed out (4.0 s) — no answer within its 300000 ms timeout\n"
        );
        assert_eq!(
            t.summary(),
            "1/2 tests passed; `batch` timed out: no answer within its 300000 ms timeout"
        );
    }

    #[test]
    fn json_carries_what_the_table_shows() {
        let r = report(
            "worker-sdxl",
            JobStatus::Failed,
            61.5,
            "build: exited with code 3",
        );
        let text = result_line(&r);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["status"], "failed");
        assert_eq!(json["reason"], "build: exited with code 3");
        assert_eq!(json["timings"]["duration_seconds"], 61.5);
        assert!(text.contains(json["reason"].as_str().unwrap()));
        assert!(text.contains(json["repo"]["name"].as_str().unwrap()));
    }

    #[test]
    fn a_published_fix_shows_its_pull_request() {
        let mut r = report(
            "worker-x",
            JobStatus::Fixed,
            30.0,
            "fixed by the agent in attempt 1 of 3: MODEL",
        );
        r.fix = Some(janitor_model::report::FixReport {
            max_attempts: 3,
            attempts: vec![],
            patch: None,
            patch_error: None,
            patch_text: None,
            head_commit: None,
            pr_status: "created".into(),
            pr_url: Some("https://github.com/runpod-workers/worker-x/pull/12".into()),
            pr_error: None,
        });
        assert_eq!(
            result_line(&r),
            "✓ worker-x: fixed (PR #12) (30s) — fixed by the agent in attempt 1 of 3: MODEL"
        );
        r.status = JobStatus::Changed;
        r.reason = Some("changed by the agent in attempt 1 of 3: bump runpod".into());
        r.model_cost_usd = Some(0.4249);
        assert_eq!(
            result_line(&r),
            "✓ worker-x: changed (PR #12) (30s) — changed by the agent in attempt 1 of 3: bump runpod [model $0.42]"
        );
    }

    #[test]
    fn missing_output_is_said_in_the_table() {
        let mut r = report("worker-big", JobStatus::Failed, 10.0, "ERROR at 300001");
        assert!(!result_line(&r).contains("not in CloudWatch"));
        r.output = Some(janitor_model::report::OutputCounts {
            lines: 1000,
            bytes: 9000,
            shipped_events: 900,
            dropped_events: 80,
            failed_events: 20,
            missing_reason: Some("dropped".into()),
            events: 1000,
            archive: None,
            archive_error: Some("S3 refused".into()),
        });
        assert!(
            result_line(&r).ends_with("[100 of 1000 output events not in CloudWatch]"),
            "{}",
            result_line(&r)
        );
        if let Some(o) = r.output.as_mut() {
            o.archive = Some("janitor-reports/runs/r/jobs/j/output.log.gz".into());
        }
        assert!(
            result_line(&r).ends_with("[100 of 1000 output events not in CloudWatch; janitorctl logs reads it all from the archive]"),
            "{}",
            result_line(&r)
        );
    }
}
