//! The daemon's decisions outside the lifecycle machine, as pure functions table-tested below:
//! whether to poll, what to do with a received message, whether the queue counts as empty,
//! whether an idle instance may leave, whether cleanup is due. No I/O: the loop asks the
//! services and hands the answers in.

use janitor_model::job::{Job, Rejection};
use janitor_services::aws::Depth;
use janitor_services::fleet::GroupView;
use janitor_services::gpu::GpuUnusable;

/// What to do with a received message.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// The state changed while the poll was out: make it visible again at once.
    HandBack,
    /// A bad message: record why and leave it for the dead-letter queue.
    Reject(Rejection),
    /// A GPU job without a usable GPU here: back to the queue for another instance; `unfit`
    /// when this instance should have GPUs (it is marked unhealthy).
    HandBackForGpu {
        job: Box<Job>,
        reason: String,
        unfit: bool,
    },
    /// Start it.
    Start(Box<Job>),
}

/// Decides on a received message. `gpu_check` is asked only for a GPU job.
pub fn admit(
    accepts_jobs: bool,
    decoded: Result<Job, Rejection>,
    expect_gpus: bool,
    gpu_check: impl FnOnce() -> Result<(), GpuUnusable>,
) -> Admission {
    if !accepts_jobs {
        return Admission::HandBack;
    }
    let job = match decoded {
        Err(r) => return Admission::Reject(r),
        Ok(job) => job,
    };
    if job.spec.gpu_required {
        if let Err(GpuUnusable(reason)) = gpu_check() {
            return Admission::HandBackForGpu {
                job: Box::new(job),
                reason,
                unfit: expect_gpus,
            };
        }
    }
    Admission::Start(Box::new(job))
}

/// Whether to open a long poll now: idle, no job, no poll open, past any backoff, and the
/// lifecycle state read at least once (a warm-pool instance's first boot must not take a job
/// before it learns it is about to be stopped).
pub fn should_poll(
    accepts_jobs: bool,
    job_running: bool,
    polling: bool,
    backoff_over: bool,
    lifecycle_known: bool,
) -> bool {
    accepts_jobs && !job_running && !polling && backoff_over && lifecycle_known
}

/// Whether an idle instance may leave: nothing visible on the queue. Jobs in flight are other
/// instances' work, which never keeps an idle one billing. A depth that could not be read
/// counts as work waiting (stay rather than strand it).
pub fn nothing_waiting(depth: Option<Depth>) -> bool {
    matches!(depth, Some(Depth { visible: 0, .. }))
}

/// Whether the queue is drained (`--exit-when-idle`): nothing visible and nothing in flight,
/// since an in-flight job may come back. A depth that could not be read is not drained.
pub fn queue_is_empty(depth: Option<Depth>) -> bool {
    matches!(
        depth,
        Some(Depth {
            visible: 0,
            in_flight: 0
        })
    )
}

/// Whether an idle instance may lower the desired capacity by one: never below the group's
/// minimum, never below the busy (protected) instances, and only from `InService`.
pub fn may_scale_in(g: &GroupView) -> bool {
    let floor = g.min.max(i32::try_from(g.protected).unwrap_or(i32::MAX));
    g.in_service && g.desired > floor
}

/// Whether cleanup runs now: only while no job runs, after each job and on the interval.
pub fn cleanup_due(
    accepts_jobs: bool,
    job_running: bool,
    job_ended: bool,
    interval_over: bool,
) -> bool {
    accepts_jobs && !job_running && (job_ended || interval_over)
}

#[cfg(test)]
mod tests {
    use super::*;
    use janitor_model::config::{JobSpec, RepoRef};
    use std::time::Duration;

    #[test]
    fn scale_in_floor() {
        // (desired, min, protected, in_service) -> allowed
        let cases = [
            ((3, 0, 2, true), true),
            ((2, 0, 2, true), false),
            ((1, 0, 0, true), true),
            ((1, 1, 0, true), false),
            ((4, 2, 1, true), true),
            ((3, 2, 2, true), true),
            ((3, 0, 0, false), false),
            ((0, 0, 0, true), false),
        ];
        for ((desired, min, protected, in_service), want) in cases {
            let g = GroupView {
                desired,
                min,
                protected,
                in_service,
            };
            assert_eq!(may_scale_in(&g), want, "{g:?}");
        }
    }

    #[test]
    fn empty_queue() {
        let d = |visible, in_flight| Some(Depth { visible, in_flight });
        let cases = [
            (d(0, 0), true),
            (d(1, 0), false),
            (d(0, 1), false),
            (None, false),
        ];
        for (depth, want) in cases {
            assert_eq!(queue_is_empty(depth), want, "{depth:?}");
        }
        // Idle is per instance: another instance's job in flight does not keep this one.
        let waiting = [
            (d(0, 0), true),
            (d(0, 3), true),
            (d(1, 0), false),
            (None, false),
        ];
        for (depth, want) in waiting {
            assert_eq!(nothing_waiting(depth), want, "{depth:?}");
        }
    }

    #[test]
    fn polling_and_cleanup() {
        // (accepts, running, polling, backoff over, lifecycle known) -> poll
        let polls = [
            ((true, false, false, true, true), true),
            ((false, false, false, true, true), false),
            ((true, true, false, true, true), false),
            ((true, false, true, true, true), false),
            ((true, false, false, false, true), false),
            ((true, false, false, true, false), false),
        ];
        for ((a, r, p, b, k), want) in polls {
            assert_eq!(should_poll(a, r, p, b, k), want, "{a} {r} {p} {b} {k}");
        }
        // (accepts, running, ended, interval over) -> clean
        let cleans = [
            ((true, false, true, false), true),
            ((true, false, false, true), true),
            ((true, false, false, false), false),
            ((true, true, true, true), false),
            ((false, false, true, true), false),
        ];
        for ((a, r, e, i), want) in cleans {
            assert_eq!(cleanup_due(a, r, e, i), want, "{a} {r} {e} {i}");
        }
    }

    fn job(gpu: bool) -> Job {
        let mut spec = JobSpec::new(
            RepoRef {
                organization: "o".into(),
                name: "n".into(),
                url: None,
                git_ref: None,
            },
            Duration::from_secs(60),
        );
        spec.gpu_required = gpu;
        Job {
            job_id: "j".into(),
            run_id: "r".into(),
            enqueued_at: time::OffsetDateTime::UNIX_EPOCH,
            spec,
        }
    }

    #[test]
    fn admissions() {
        let no_gpu = || Err(GpuUnusable("NVML is not available".into()));
        let gpu_ok = || Ok(());
        let rejection = Rejection {
            reason: "bad".into(),
            run_id: None,
            job_id: None,
        };
        assert_eq!(
            admit(false, Ok(job(false)), false, gpu_ok),
            Admission::HandBack
        );
        assert_eq!(
            admit(true, Err(rejection.clone()), false, gpu_ok),
            Admission::Reject(rejection)
        );
        assert!(matches!(
            admit(true, Ok(job(false)), true, no_gpu),
            Admission::Start(_)
        ));
        assert!(matches!(
            admit(true, Ok(job(true)), false, gpu_ok),
            Admission::Start(_)
        ));
        for expect in [false, true] {
            match admit(true, Ok(job(true)), expect, no_gpu) {
                Admission::HandBackForGpu { reason, unfit, .. } => {
                    assert_eq!(reason, "NVML is not available");
                    assert_eq!(unfit, expect);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
