//! The job's verdict from its steps and its scanned output: the first stop, else the first
//! step that could not work for a reason outside the repository (`error`), else the first
//! failure, else unexpected `ERROR` lines, else success.

use janitor_model::report::{ErrorLines, JobStatus, StepReport, StepStatus};

/// The final status and its one-line reason, from the steps and the scanned output.
pub fn verdict(steps: &[StepReport], errors: &ErrorLines) -> (JobStatus, Option<String>) {
    let first = |want: StepStatus| steps.iter().find(|s| s.status == want);
    let because = |s: &StepReport| Some(format!("{}: {}", s.name.as_str(), s.detail));
    if let Some(s) = first(StepStatus::TimedOut) {
        return (JobStatus::TimedOut, because(s));
    }
    if let Some(s) = first(StepStatus::Interrupted) {
        return (JobStatus::Interrupted, because(s));
    }
    if let Some(s) = first(StepStatus::Error) {
        return (JobStatus::Error, because(s));
    }
    if let Some(s) = first(StepStatus::Failed) {
        return (JobStatus::Failed, because(s));
    }
    if errors.count > 0 {
        let first_line = errors.first.first().cloned().unwrap_or_default();
        return (
            JobStatus::Failed,
            Some(format!(
                "{} unexpected ERROR line(s), first: {first_line}",
                errors.count
            )),
        );
    }
    (JobStatus::Succeeded, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use janitor_model::report::StepName;

    fn step(name: StepName, status: StepStatus) -> StepReport {
        StepReport {
            name,
            status,
            duration_seconds: 0.0,
            exit_code: None,
            detail: "d".into(),
            output: None,
        }
    }

    #[test]
    fn verdicts() {
        let none = ErrorLines::default();
        let ok = [
            step(StepName::Clone, StepStatus::Succeeded),
            step(StepName::Gpu, StepStatus::Skipped),
        ];
        assert_eq!(verdict(&ok, &none), (JobStatus::Succeeded, None));
        let errs = ErrorLines {
            count: 1,
            first: vec!["ERROR x".into()],
        };
        assert_eq!(verdict(&ok, &errs).0, JobStatus::Failed);
        let failed = [
            step(StepName::Build, StepStatus::Failed),
            step(StepName::Run, StepStatus::NotRun),
        ];
        assert_eq!(
            verdict(&failed, &none),
            (JobStatus::Failed, Some("build: d".into()))
        );
        let timed = [
            step(StepName::Build, StepStatus::Failed),
            step(StepName::Run, StepStatus::TimedOut),
        ];
        assert_eq!(verdict(&timed, &none).0, JobStatus::TimedOut);
        let errored = [
            step(StepName::Clone, StepStatus::Error),
            step(StepName::Build, StepStatus::NotRun),
        ];
        assert_eq!(
            verdict(&errored, &errs),
            (JobStatus::Error, Some("clone: d".into()))
        );
        let intr = [step(StepName::Run, StepStatus::Interrupted)];
        assert_eq!(verdict(&intr, &none).0, JobStatus::Interrupted);
    }
}
