//! The fix loop: a failed validation goes to the agent with what failed (or, with
//! `agent: always`, a passing one goes to it with the prompt); a change it leaves in the
//! checkout is validated again, and a new failure goes back to it, up to `max_fix_attempts`
//! and the job's model budget. The change that passes is kept as a patch against the cloned
//! commit.

use std::collections::VecDeque;
use std::sync::Mutex;

use janitor_model::report::{FixAttempt, FixReport, JobStatus, StepReport, TestsReport};
use janitor_services::logs::LogSink;

/// How many of the job's last output lines the agent is given.
pub const OUTPUT_TAIL_LINES: usize = 200;

/// A sink that passes lines on and keeps the last [`OUTPUT_TAIL_LINES`] of them.
pub struct Recent<'a> {
    inner: &'a dyn LogSink,
    tail: Mutex<VecDeque<String>>,
}

impl<'a> Recent<'a> {
    pub fn new(inner: &'a dyn LogSink) -> Self {
        Recent {
            inner,
            tail: Mutex::new(VecDeque::with_capacity(OUTPUT_TAIL_LINES)),
        }
    }

    /// The last lines, oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl LogSink for Recent<'_> {
    fn line(&self, line: &str) {
        if let Ok(mut t) = self.tail.lock() {
            if t.len() == OUTPUT_TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line.to_string());
        }
        self.inner.line(line);
    }
}

/// A sink that redacts the job's secrets from every line before passing it on. It wraps every
/// other sink of the job (the tail the agent is given included), so no line is kept raw.
pub struct Redacted<'a> {
    pub inner: &'a dyn LogSink,
    pub redactor: &'a janitor_services::secrets::Redactor,
}

impl LogSink for Redacted<'_> {
    fn line(&self, line: &str) {
        if self.redactor.is_empty() {
            self.inner.line(line);
        } else {
            self.inner.line(&self.redactor.redact(line));
        }
    }
}

/// A validation's verdict and what the agent needs to know of it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: JobStatus,
    pub reason: Option<String>,
    pub steps: Vec<StepReport>,
    pub tests: Option<TestsReport>,
    pub errors: Vec<String>,
}

/// What the agent is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fix a failed validation.
    Fix,
    /// Carry out the prompt on a passing repository (`agent: always`).
    Change,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fix => "fix",
            Mode::Change => "change",
        }
    }
}

/// One attempt's place in the loop and what it may spend.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub attempt: u32,
    pub max_attempts: u32,
    pub mode: Mode,
    /// What is left of the job's model budget, in dollars.
    pub budget_usd: f64,
}

/// The model cost of the attempts so far: each answer's `cost_usd`.
pub fn model_cost(attempts: &[FixAttempt]) -> Option<f64> {
    let costs: Vec<f64> = attempts
        .iter()
        .filter_map(|a| a.result.as_ref()?.get("cost_usd")?.as_f64())
        .filter(|c| c.is_finite() && *c >= 0.0)
        .collect();
    (!costs.is_empty()).then(|| (costs.iter().sum::<f64>() * 1e6).round() / 1e6)
}

/// What is left of a budget of `cents` after the attempts so far, in dollars.
pub fn budget_left(cents: u32, attempts: &[FixAttempt]) -> f64 {
    f64::from(cents) / 100.0 - model_cost(attempts).unwrap_or(0.0)
}

/// `passed 3/3 tests`, or `every step passed` for a repository without runpod tests.
pub fn passed_summary(tests: Option<&TestsReport>) -> String {
    tests
        .filter(|t| t.total > 0)
        .map_or("every step passed".to_string(), |t| {
            format!("passed {}/{} tests", t.passed, t.total)
        })
}

/// `/janitor/job.json`: the job, the round, and the validation the agent is to fix (or, in
/// `change` mode, the one it passed).
pub fn job_document(
    ctx: &crate::JobContext,
    round: &Round,
    failure: &Failure,
    output_tail: &[String],
    earlier: &[FixAttempt],
) -> serde_json::Value {
    let Round {
        attempt,
        max_attempts,
        mode,
        budget_usd,
    } = *round;
    let failing: Vec<&StepReport> = failure
        .steps
        .iter()
        .filter(|s| {
            matches!(
                s.status,
                janitor_model::report::StepStatus::Failed
                    | janitor_model::report::StepStatus::TimedOut
            )
        })
        .collect();
    let failing_tests: Vec<&janitor_model::report::TestResult> = failure
        .tests
        .iter()
        .flat_map(|t| t.results.iter())
        .filter(|r| r.status != janitor_model::report::TestStatus::Passed)
        .collect();
    serde_json::json!({
        "job_id": ctx.job.job_id,
        "run_id": ctx.job.run_id,
        "repo": ctx.job.spec.repo,
        "ref": ctx.job.spec.repo.git_ref,
        "prompt": ctx.job.spec.prompt,
        "mode": mode.as_str(),
        "attempt": attempt,
        "max_attempts": max_attempts,
        "max_turns": ctx.job.spec.agent.max_turns,
        "budget_usd": (budget_usd * 100.0).floor() / 100.0,
        "validation": {
            "status": failure.status,
            "reason": failure.reason,
            "failing_steps": failing,
            "failing_tests": failing_tests,
            "error_lines": failure.errors,
            "steps": failure.steps,
        },
        "output_tail": output_tail,
        "earlier_attempts": earlier.iter().map(|a| serde_json::json!({
            "attempt": a.attempt,
            "result": a.result,
            "changed": a.changed,
            "status": a.status,
            "reason": a.reason,
        })).collect::<Vec<_>>(),
    })
}

/// janitord's own identity for the baseline commit.
const JANITOR_IDENTITY: [&str; 4] = [
    "-c",
    "user.name=janitor",
    "-c",
    "user.email=janitor@localhost",
];

/// Makes sure the checkout has a commit to compare the agent's changes with (a local
/// directory copied without git gets one of its own, its git directory beside the tree).
pub async fn baseline(repo: &crate::git::Repo) -> Result<(), String> {
    let git = |args: &'static [&'static str]| async move {
        repo.run(args).await.map_err(|e| e.to_string())
    };
    if git(&["rev-parse", "--verify", "-q", "HEAD"]).await.is_ok() {
        return Ok(());
    }
    git(&["init", "-q"]).await?;
    git(&["add", "-A"]).await?;
    let mut args = JANITOR_IDENTITY.to_vec();
    args.extend([
        "commit",
        "-q",
        "--no-verify",
        "--allow-empty",
        "-m",
        "janitor: the checkout as cloned",
    ]);
    repo.run(&args).await.map(|_| ()).map_err(|e| e.to_string())
}

/// The agent's change against the cloned commit, as a patch; `None` when there is none. No
/// external diff or textconv driver runs, whatever the tree's attributes say. The caller has
/// checked that no `.git` is left anywhere in the tree ([`crate::git::planted`]); besides,
/// `git add` is kept off the index's gitlinks (it would ask the nested repository for its
/// status), and a change that adds or alters a gitlink is refused: the agent's change is
/// files, never another repository's commit.
pub async fn change(repo: &crate::git::Repo) -> Result<Option<String>, String> {
    let links = crate::git::gitlinks(repo)
        .await
        .map_err(|e| e.to_string())?;
    let excluded: Vec<String> = links
        .iter()
        .map(|p| format!(":(exclude,literal){p}"))
        .collect();
    let mut add = vec!["add", "-A", "--", "."];
    add.extend(excluded.iter().map(String::as_str));
    repo.run(&add).await.map_err(|e| e.to_string())?;
    let raw = repo
        .run(&["diff", "--cached", "--raw", "-z", "--no-renames", "HEAD"])
        .await
        .map_err(|e| e.to_string())?;
    if let Some(path) = gitlink_changed(&raw) {
        return Err(format!(
            "the change adds or alters a submodule (a gitlink) at `{path}`; the agent may change files, not record another repository's commit"
        ));
    }
    let patch = repo
        .run(&[
            "diff",
            "--cached",
            "--binary",
            "--no-ext-diff",
            "--no-textconv",
            "--no-color",
            "HEAD",
        ])
        .await
        .map_err(|e| e.to_string())?;
    Ok((!patch.trim().is_empty()).then_some(patch))
}

/// The first path of `git diff --raw -z` output whose old or new mode is a gitlink's.
fn gitlink_changed(raw: &str) -> Option<String> {
    let mut fields = raw.split('\0');
    while let Some(meta) = fields.next() {
        let path = fields.next()?;
        let mut modes = meta.trim_start_matches(':').split(' ');
        let (old, new) = (modes.next()?, modes.next()?);
        if old == "160000" || new == "160000" {
            return Some(path.to_string());
        }
    }
    None
}

/// What the loop ended with.
pub struct Ended {
    pub status: JobStatus,
    pub reason: Option<String>,
    pub report: FixReport,
}

/// The verdict after `change` attempts on a passing repository: `changed` when the last
/// re-validation passed; else the repository still passes (`succeeded`), and the reason says
/// what became of the prompt; an instance's failure is `error`.
fn conclude_change(attempts: Vec<FixAttempt>, max_attempts: u32, patch: Option<String>) -> Ended {
    use janitor_model::report::StepStatus;
    let (status, reason) = match attempts.last() {
        None => (
            JobStatus::Succeeded,
            Some("the repository passes; the agent did not run (the model budget or the deadline)".to_string()),
        ),
        Some(a) if a.status == Some(JobStatus::Succeeded) => (
            JobStatus::Changed,
            Some(format!(
                "changed by the agent in attempt {} of {max_attempts}: {}{}",
                a.attempt,
                summary_of(a),
                tests_note(a)
            )),
        ),
        Some(a) if a.agent.status == StepStatus::Error => (
            JobStatus::Error,
            Some(format!("the agent could not work: {}", a.agent.detail)),
        ),
        Some(a) if a.agent.status != StepStatus::Succeeded => (
            JobStatus::Succeeded,
            Some(format!(
                "the repository passes; the agent's attempt {} failed: {}",
                a.attempt, a.agent.detail
            )),
        ),
        Some(a) if !a.changed => (
            JobStatus::Succeeded,
            Some(format!(
                "the repository passes; the agent changed nothing: {}",
                summary_of(a)
            )),
        ),
        Some(a) => match a.status {
            Some(s @ (JobStatus::Error | JobStatus::TimedOut | JobStatus::Interrupted)) => {
                (s, a.reason.clone())
            }
            _ => (
                JobStatus::Succeeded,
                Some(format!(
                    "the repository passes, but the prompt's change did not after {} attempt(s): {}",
                    a.attempt,
                    a.reason.clone().unwrap_or_default()
                )),
            ),
        },
    };
    ended(status, reason, attempts, max_attempts, patch)
}

/// The loop's end: the patch is kept only for a change that passed (`fixed`, `changed`);
/// `no_changes` when no attempt changed anything.
fn ended(
    status: JobStatus,
    reason: Option<String>,
    attempts: Vec<FixAttempt>,
    max_attempts: u32,
    patch: Option<String>,
) -> Ended {
    let kept = matches!(status, JobStatus::Fixed | JobStatus::Changed);
    let any_change = attempts.iter().any(|a| a.changed);
    Ended {
        status,
        reason,
        report: FixReport {
            max_attempts,
            attempts,
            patch: None,
            patch_error: None,
            patch_text: patch.filter(|_| kept),
            head_commit: None,
            pr_status: if kept || any_change {
                "not_applicable".to_string()
            } else {
                "no_changes".to_string()
            },
            pr_url: None,
            pr_error: None,
        },
    }
}

/// `; the change removed test `x`: it passed the tests as they were before it`, when the
/// attempt's change touched the tests.
fn tests_note(a: &FixAttempt) -> String {
    if a.tests_changed.is_empty() {
        return String::new();
    }
    format!(
        "; the change {}: it passed the tests as they were before it",
        a.tests_changed.join(", ")
    )
}

/// The first line of an attempt's answer, as the report quotes it.
fn summary_of(a: &FixAttempt) -> String {
    a.result
        .as_ref()
        .and_then(|r| r.get("summary"))
        .and_then(|s| s.as_str())
        .map(|s| janitor_model::runpod::excerpt(&serde_json::Value::String(s.to_string())))
        .unwrap_or_else(|| "no summary".to_string())
}

/// The verdict after the attempts: `fixed` when the last re-validation passed, `unfixable`
/// when the agent said so, else the last failure's, saying how far the agent got.
pub fn conclude(
    first: &Failure,
    attempts: Vec<FixAttempt>,
    max_attempts: u32,
    patch: Option<String>,
    mode: Mode,
) -> Ended {
    if mode == Mode::Change {
        return conclude_change(attempts, max_attempts, patch);
    }
    let last = attempts.last();
    let answered = |a: &FixAttempt| {
        a.result
            .as_ref()
            .and_then(|r| r.get("status"))
            .and_then(|s| s.as_str())
            .map(str::to_string)
    };
    let base = first.reason.clone().unwrap_or_default();
    let (status, reason) = match last {
        None => (first.status, first.reason.clone()),
        // The model API failed past the agent's retries: the instance's problem, tried again.
        Some(a) if a.agent.status == janitor_model::report::StepStatus::Error => (
            JobStatus::Error,
            Some(format!(
                "{base}; the agent could not work in attempt {}: {}",
                a.attempt, a.agent.detail
            )),
        ),
        Some(a) if a.status == Some(JobStatus::Succeeded) => (
            JobStatus::Fixed,
            Some(format!(
                "fixed by the agent in attempt {} of {max_attempts}: {}{}",
                a.attempt,
                summary_of(a),
                tests_note(a)
            )),
        ),
        Some(a) if answered(a).as_deref() == Some("unfixable") && !a.changed => (
            JobStatus::Unfixable,
            Some(format!(
                "{base}; the agent says it cannot be fixed: {}",
                summary_of(a)
            )),
        ),
        Some(a) if a.agent.status != janitor_model::report::StepStatus::Succeeded => (
            first.status,
            Some(format!(
                "{base}; the agent's attempt {} failed: {}",
                a.attempt, a.agent.detail
            )),
        ),
        Some(a) if !a.changed => (
            first.status,
            Some(format!(
                "{base}; the agent changed nothing in attempt {}: {}",
                a.attempt,
                summary_of(a)
            )),
        ),
        Some(a) => match a.status {
            // The instance failed the re-validation: the job is tried again.
            Some(s @ (JobStatus::Error | JobStatus::TimedOut | JobStatus::Interrupted)) => {
                (s, a.reason.clone())
            }
            _ => (
                JobStatus::Failed,
                Some(format!(
                    "not fixed after {} attempt(s); last: {}",
                    a.attempt,
                    a.reason.clone().unwrap_or_default()
                )),
            ),
        },
    };
    ended(status, reason, attempts, max_attempts, patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use janitor_model::report::StepStatus;

    fn step(status: StepStatus, detail: &str) -> StepReport {
        StepReport {
            name: janitor_model::report::StepName::Agent,
            status,
            duration_seconds: 1.0,
            exit_code: Some(0),
            detail: detail.into(),
            output: None,
        }
    }

    fn first() -> Failure {
        Failure {
            status: JobStatus::Failed,
            reason: Some("test: hello: expected 4, got 5".into()),
            steps: vec![],
            tests: None,
            errors: vec![],
        }
    }

    fn attempt(n: u32, answer: &str, changed: bool, then: Option<JobStatus>) -> FixAttempt {
        FixAttempt {
            attempt: n,
            agent: step(StepStatus::Succeeded, "answered"),
            result: Some(serde_json::json!({"status": answer, "summary": format!("try {n}")})),
            changed,
            steps: vec![],
            tests: None,
            status: then,
            reason: then.map(|_| format!("reason {n}")),
            tests_changed: Vec::new(),
        }
    }

    #[test]
    fn verdicts_after_the_attempts() {
        let fixed = conclude(
            &first(),
            vec![
                attempt(1, "fixed", true, Some(JobStatus::Failed)),
                attempt(2, "fixed", true, Some(JobStatus::Succeeded)),
            ],
            3,
            Some("diff".into()),
            Mode::Fix,
        );
        assert_eq!(fixed.status, JobStatus::Fixed);
        assert_eq!(
            fixed.reason.as_deref(),
            Some("fixed by the agent in attempt 2 of 3: try 2")
        );
        assert_eq!(fixed.report.patch_text.as_deref(), Some("diff"));
        let mut touched = attempt(1, "fixed", true, Some(JobStatus::Succeeded));
        touched.tests_changed = vec!["removed test `slow`".into()];
        assert_eq!(
            conclude(&first(), vec![touched], 3, None, Mode::Fix).reason.as_deref(),
            Some("fixed by the agent in attempt 1 of 3: try 1; the change removed test `slow`: it passed the tests as they were before it")
        );

        let unfixable = conclude(
            &first(),
            vec![attempt(1, "unfixable", false, None)],
            3,
            None,
            Mode::Fix,
        );
        assert_eq!(unfixable.status, JobStatus::Unfixable);
        assert_eq!(
            unfixable.reason.as_deref(),
            Some("test: hello: expected 4, got 5; the agent says it cannot be fixed: try 1")
        );
        assert_eq!(unfixable.report.pr_status, "no_changes");

        let worse = conclude(
            &first(),
            (1..=3)
                .map(|n| attempt(n, "fixed", true, Some(JobStatus::Failed)))
                .collect(),
            3,
            Some("diff".into()),
            Mode::Fix,
        );
        assert_eq!(worse.status, JobStatus::Failed);
        assert_eq!(
            worse.reason.as_deref(),
            Some("not fixed after 3 attempt(s); last: reason 3")
        );
        assert_eq!(worse.report.patch_text, None, "only a fix is kept");

        let idle = conclude(
            &first(),
            vec![attempt(1, "failed", false, None)],
            3,
            None,
            Mode::Fix,
        );
        assert_eq!(idle.status, JobStatus::Failed);
        assert!(idle
            .reason
            .unwrap()
            .ends_with("the agent changed nothing in attempt 1: try 1"));

        let lost = conclude(
            &first(),
            vec![attempt(1, "fixed", true, Some(JobStatus::Error))],
            3,
            None,
            Mode::Fix,
        );
        assert_eq!(
            lost.status,
            JobStatus::Error,
            "the instance's failure is retried"
        );
    }

    #[test]
    fn verdicts_after_change_attempts() {
        let passing = Failure {
            status: JobStatus::Succeeded,
            reason: None,
            steps: vec![],
            tests: None,
            errors: vec![],
        };
        let c = |attempts: Vec<FixAttempt>| {
            let e = conclude(&passing, attempts, 3, Some("diff".into()), Mode::Change);
            (e.status, e.reason.unwrap_or_default(), e.report.patch_text)
        };
        let (status, reason, patch) =
            c(vec![attempt(1, "fixed", true, Some(JobStatus::Succeeded))]);
        assert_eq!(status, JobStatus::Changed);
        assert_eq!(reason, "changed by the agent in attempt 1 of 3: try 1");
        assert_eq!(patch.as_deref(), Some("diff"));
        let (status, reason, patch) = c(vec![attempt(1, "passed", false, None)]);
        assert_eq!(status, JobStatus::Succeeded, "nothing to change");
        assert_eq!(
            reason,
            "the repository passes; the agent changed nothing: try 1"
        );
        assert_eq!(patch, None);
        let (status, reason, _) = c((1..=3)
            .map(|n| attempt(n, "fixed", true, Some(JobStatus::Failed)))
            .collect());
        assert_eq!(status, JobStatus::Succeeded, "the repository still works");
        assert!(
            reason.starts_with(
                "the repository passes, but the prompt's change did not after 3 attempt(s)"
            ),
            "{reason}"
        );
        let (status, _, _) = c(vec![attempt(1, "fixed", true, Some(JobStatus::Error))]);
        assert_eq!(
            status,
            JobStatus::Error,
            "the instance's failure is retried"
        );
    }

    #[test]
    fn the_tail_the_agent_gets_is_redacted() {
        let seen = Recent::new(&janitor_services::logs::NullSink);
        let secrets = janitor_services::secrets::SecretValues::new(vec![(
            "KEY".into(),
            "sk-job-secret".into(),
        )]);
        let redactor = secrets.redactor(&["ghp_instance".into()]);
        let redacted = Redacted {
            inner: &seen,
            redactor: &redactor,
        };
        redacted.line("push ghp_instance with sk-job-secret");
        assert_eq!(seen.tail(), ["push *** with ***"]);
    }

    #[test]
    fn a_gitlink_in_the_change_is_found() {
        let raw = ":100644 100644 aaaa bbbb M\0config.env\0:000000 160000 0000 cccc A\0sub\0";
        assert_eq!(gitlink_changed(raw).as_deref(), Some("sub"));
        let raw = ":160000 000000 cccc 0000 D\0vendored\0";
        assert_eq!(gitlink_changed(raw).as_deref(), Some("vendored"));
        assert_eq!(
            gitlink_changed(":100644 100755 aaaa aaaa M\0run.sh\0"),
            None
        );
        assert_eq!(gitlink_changed(""), None);
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let sink = janitor_services::logs::NullSink;
        let recent = Recent::new(&sink);
        for i in 0..250 {
            recent.line(&format!("l{i}"));
        }
        let tail = recent.tail();
        assert_eq!(tail.len(), OUTPUT_TAIL_LINES);
        assert_eq!((tail[0].as_str(), tail[199].as_str()), ("l50", "l249"));
    }
}
