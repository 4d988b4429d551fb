//! What janitorctl prints: summaries and the results table in seed 002's shape.

use janitor_model::config::WorkersConfig;
use janitor_model::duration;
use janitor_model::report::{JobStatus, Report, StepStatus};

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

/// The word seed 002 prints for a status.
pub fn status_word(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Succeeded => "success",
        other => other.as_str(),
    }
}

/// `✓ worker-basic: success (4m32s)`, with the reason on failures.
pub fn result_line(report: &Report) -> String {
    let mark = if report.status == JobStatus::Succeeded {
        "✓"
    } else {
        "✗"
    };
    let took = duration::format(std::time::Duration::from_secs_f64(
        report.timings.duration_seconds.max(0.0),
    ));
    let mut line = format!(
        "{mark} {}: {} ({took})",
        report.repo.name,
        status_word(report.status)
    );
    if let Some(reason) = &report.reason {
        line.push_str(" — ");
        line.push_str(reason);
    }
    line
}

/// `clone ✓  build ✓  run ✗  gpu –  agent –`
pub fn steps_line(report: &Report) -> String {
    report
        .steps
        .iter()
        .map(|s| {
            let mark = match s.status {
                StepStatus::Succeeded => "✓",
                StepStatus::Failed | StepStatus::TimedOut | StepStatus::Interrupted => "✗",
                StepStatus::Skipped | StepStatus::NotRun => "–",
            };
            format!("{} {mark}", s.name.as_str())
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// The `Results:` block and the `Overall Status` line.
pub fn results_table(reports: &[Report]) -> String {
    let mut out = String::from("Results:\n");
    for r in reports {
        out.push_str(&result_line(r));
        out.push('\n');
    }
    let ok = reports
        .iter()
        .filter(|r| r.status == JobStatus::Succeeded)
        .count();
    out.push_str(&format!(
        "\nOverall Status: {ok}/{} repositories successful",
        reports.len()
    ));
    out
}
