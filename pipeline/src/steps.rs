//! The one result shape of every step (`StepOutcome`), the list of steps a report carries, and
//! the outcomes of a step stopped early.

use std::time::Duration;

use janitor_model::report::{StepName, StepReport, StepStatus};
use janitor_services::engine::StopReason;
use janitor_services::logs::LogSink;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::JobContext;

/// What every step runs with: the engine, the job, its one deadline, the cancellation and the
/// log sink.
pub struct StepEnv<'a, E> {
    pub engine: &'a E,
    pub ctx: &'a JobContext,
    pub deadline: Instant,
    pub cancel: &'a CancellationToken,
    pub sink: &'a dyn LogSink,
}

/// How one step ended: every step returns this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    pub status: StepStatus,
    pub exit_code: Option<i64>,
    pub detail: String,
}

impl StepOutcome {
    pub fn succeeded(detail: impl Into<String>) -> Self {
        StepOutcome {
            status: StepStatus::Succeeded,
            exit_code: None,
            detail: detail.into(),
        }
    }

    pub fn failed(detail: impl Into<String>) -> Self {
        StepOutcome {
            status: StepStatus::Failed,
            exit_code: None,
            detail: detail.into(),
        }
    }

    /// A step that could not do its work for a reason outside the repository (the engine, the
    /// disk, the network, the instance): the job ends `error` and is tried again.
    pub fn error(detail: impl Into<String>) -> Self {
        StepOutcome {
            status: StepStatus::Error,
            exit_code: None,
            detail: detail.into(),
        }
    }

    /// An engine call that failed: `error` when a retry can help (the engine unreachable or
    /// failing), `failed` when the engine refused what the repository asked.
    pub fn engine(e: &janitor_services::engine::EngineError) -> Self {
        use janitor_services::error::ErrorKind;
        match e.kind() {
            ErrorKind::Rejected | ErrorKind::NotFound | ErrorKind::Conflict => {
                StepOutcome::failed(e.to_string())
            }
            ErrorKind::Throttled | ErrorKind::Unavailable => StepOutcome::error(e.to_string()),
        }
    }

    /// A step stopped at the deadline or by an interruption.
    pub fn stopped(reason: StopReason, timeout: Duration) -> Self {
        StepOutcome {
            status: stop_status(reason),
            exit_code: None,
            detail: stop_detail(reason, timeout),
        }
    }

    pub fn with_code(mut self, code: Option<i64>) -> Self {
        self.exit_code = code;
        self
    }

    pub fn ok(&self) -> bool {
        self.status == StepStatus::Succeeded
    }
}

pub fn stop_status(reason: StopReason) -> StepStatus {
    match reason {
        StopReason::Deadline => StepStatus::TimedOut,
        StopReason::Interrupted => StepStatus::Interrupted,
    }
}

pub fn stop_detail(reason: StopReason, timeout: Duration) -> String {
    match reason {
        StopReason::Deadline => format!(
            "stopped at the job's {} hard timeout",
            janitor_model::duration::format(timeout)
        ),
        StopReason::Interrupted => "stopped: the instance is being interrupted".to_string(),
    }
}

/// The steps so far, in order.
#[derive(Debug, Default)]
pub struct Steps {
    pub list: Vec<StepReport>,
}

impl Steps {
    /// Records a step that ran from `started` until now.
    pub fn record(&mut self, name: StepName, started: Instant, outcome: StepOutcome) -> bool {
        let ok = outcome.ok();
        self.list.push(StepReport {
            name,
            status: outcome.status,
            duration_seconds: round_ms(started.elapsed()),
            exit_code: outcome.exit_code,
            detail: outcome.detail,
            output: None,
        });
        ok
    }

    /// Records a step that did not run because an earlier one did not succeed.
    pub fn not_run(&mut self, name: StepName, why: &str) {
        self.push_idle(name, StepStatus::NotRun, why);
    }

    /// Records a step the job does not ask for.
    pub fn skipped(&mut self, name: StepName, why: &str) {
        self.push_idle(name, StepStatus::Skipped, why);
    }

    fn push_idle(&mut self, name: StepName, status: StepStatus, why: &str) {
        self.list.push(StepReport {
            name,
            status,
            duration_seconds: 0.0,
            exit_code: None,
            detail: why.to_string(),
            output: None,
        });
    }

    /// Whether a step was stopped (deadline or interruption): later steps do not start.
    pub fn stopped(&self) -> bool {
        self.list
            .iter()
            .any(|s| matches!(s.status, StepStatus::TimedOut | StepStatus::Interrupted))
    }
}

pub fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
