//! The daemon's lifecycle as a pure state machine: `next(state, event, config) -> (state, actions)`.
//! No I/O and no clock: time arrives inside events as seconds. The loop in `daemon` performs the
//! actions and feeds back what happened.

/// Where the daemon is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    /// Polling the queue; idle since `since` (seconds on the loop's clock).
    Idle { since: u64 },
    /// A job runs; no polling.
    Busy,
    /// The idle instance is lowering the desired capacity; no polling while that call is out.
    Leaving,
    /// The group is taking the busy instance out (`Terminated`, `Warmed:*`): no polling; the job
    /// finishes while heartbeats keep the lifecycle action open.
    Draining { next_heartbeat: u64 },
    /// A spot interruption notice: the job is stopped and handed back; no polling.
    Interrupting,
    /// Stop requested (SIGTERM): the job is stopped and handed back, then the daemon exits.
    Stopping,
    /// Drained or interrupted: nothing more to do until the instance goes away.
    Parked,
    /// The loop ends.
    Done,
}

impl State {
    /// Whether the loop may take a message.
    pub fn accepts_jobs(self) -> bool {
        matches!(self, State::Idle { .. })
    }
}

/// What the lifecycle target state read from IMDS means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    InService,
    /// `Terminated`, `Warmed:Stopped`, `Warmed:Hibernated`, `Warmed:Running`, …
    Leaving(String),
}

impl Target {
    pub fn parse(text: &str) -> Target {
        match text.trim() {
            "InService" | "" => Target::InService,
            other => Target::Leaving(other.to_string()),
        }
    }
}

/// Everything that can happen to the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message was taken and its job started.
    JobStarted,
    /// The job ended and its report was settled.
    JobEnded { now: u64 },
    /// Once a second.
    Tick { now: u64 },
    /// The answer to [`Action::CheckQueue`].
    QueueChecked { now: u64, empty: bool },
    /// The answer to [`Action::ScaleIn`]: whether the desired capacity was lowered.
    ScaledIn { now: u64, lowered: bool },
    /// The lifecycle target state changed.
    Lifecycle { now: u64, target: Target },
    /// A spot interruption notice appeared.
    SpotNotice,
    /// SIGTERM or SIGINT.
    Signal,
    /// The instance cannot take jobs (disk under its floors after cleanup, GPU expected but
    /// unusable).
    Unfit,
}

/// What the loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Protect,
    Unprotect,
    /// Stop the running job's container (SIGTERM, then kill after the grace); it reports
    /// `interrupted` and its message goes back to the queue.
    StopJob,
    /// Ask whether the queue has nothing visible (other instances' jobs in flight do not count).
    CheckQueue,
    /// Lower the group's desired capacity by one; the group's scale-in takes an idle instance.
    ScaleIn,
    /// `RecordLifecycleActionHeartbeat`.
    Heartbeat,
    /// `CompleteLifecycleAction(CONTINUE)`.
    CompleteLifecycle,
    /// `SetInstanceHealth(Unhealthy)`: the group replaces the instance.
    MarkUnhealthy,
    /// Write `instances/{id}/{time}-{event}.json`.
    Record(&'static str),
}

/// The machine's settings, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub idle_timeout: u64,
    pub heartbeat_every: u64,
    /// Idle scale-in enabled (the instance is in an Auto Scaling group).
    pub scale_in: bool,
}

/// The transition function.
pub fn next(state: State, event: &Event, cfg: &Config) -> (State, Vec<Action>) {
    use Action as A;
    use State as S;
    match (state, event) {
        // A stop request wins over everything.
        (S::Busy | S::Draining { .. } | S::Interrupting, Event::Signal) => {
            (S::Stopping, vec![A::StopJob])
        }
        (S::Stopping, Event::Signal) => (state, vec![]),
        (_, Event::Signal) => (S::Done, vec![A::Record("daemon-stop")]),

        // Taking a job.
        (S::Idle { .. }, Event::JobStarted) => (S::Busy, vec![A::Protect]),

        // A job ends.
        (S::Busy, Event::JobEnded { now }) => (S::Idle { since: *now }, vec![A::Unprotect]),
        (S::Draining { .. }, Event::JobEnded { .. }) => (
            S::Parked,
            vec![A::Unprotect, A::CompleteLifecycle, A::Record("drained")],
        ),
        (S::Interrupting, Event::JobEnded { .. }) => (S::Parked, vec![A::Unprotect]),
        (S::Stopping, Event::JobEnded { .. }) => {
            (S::Done, vec![A::Unprotect, A::Record("daemon-stop")])
        }

        // Idle scale-in: idle long enough → check the queue → lower the capacity.
        (S::Idle { since }, Event::Tick { now })
            if cfg.scale_in && now.saturating_sub(since) >= cfg.idle_timeout =>
        {
            (state, vec![A::CheckQueue])
        }
        (S::Idle { .. }, Event::QueueChecked { now, empty: false }) => {
            (S::Idle { since: *now }, vec![])
        }
        (S::Idle { since }, Event::QueueChecked { now, empty: true })
            if now.saturating_sub(since) >= cfg.idle_timeout =>
        {
            (S::Leaving, vec![A::ScaleIn])
        }
        // Lowered: the group's scale-in picks an unprotected instance, this one or another idle
        // one. Back to idle for a full period; if it is this one, the lifecycle hook says so.
        (S::Leaving, Event::ScaledIn { now, lowered: true }) => {
            (S::Idle { since: *now }, vec![A::Record("scale-in")])
        }
        // Not lowered (at the minimum, a concurrent change): stay, and try again after a full idle period.
        (
            S::Leaving,
            Event::ScaledIn {
                now,
                lowered: false,
            },
        ) => (S::Idle { since: *now }, vec![]),

        // Heartbeats while draining a busy instance.
        (S::Draining { next_heartbeat }, Event::Tick { now }) if *now >= next_heartbeat => (
            S::Draining {
                next_heartbeat: now + cfg.heartbeat_every,
            },
            vec![A::Heartbeat],
        ),

        // The group takes the instance out.
        (
            S::Busy,
            Event::Lifecycle {
                now,
                target: Target::Leaving(_),
            },
        ) => (
            S::Draining {
                next_heartbeat: now + cfg.heartbeat_every,
            },
            vec![A::Record("drain"), A::Heartbeat],
        ),
        // Idle: let the group go on at once; the ledger records follow.
        (
            S::Idle { .. } | S::Leaving,
            Event::Lifecycle {
                target: Target::Leaving(_),
                ..
            },
        ) => (
            S::Parked,
            vec![
                A::CompleteLifecycle,
                A::Record("drain"),
                A::Record("drained"),
            ],
        ),

        // A spot notice: stop now, hand the job back.
        (S::Busy | S::Draining { .. }, Event::SpotNotice) => {
            (S::Interrupting, vec![A::Record("spot-notice"), A::StopJob])
        }
        (S::Idle { .. } | S::Leaving, Event::SpotNotice) => {
            (S::Parked, vec![A::Record("spot-notice")])
        }

        // Unfit for jobs: stop polling and let the group replace the instance.
        (S::Idle { .. }, Event::Unfit) => {
            (S::Parked, vec![A::MarkUnhealthy, A::Record("unhealthy")])
        }

        // Everything else changes nothing.
        _ => (state, vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use State as S;

    const CFG: Config = Config {
        idle_timeout: 120,
        heartbeat_every: 30,
        scale_in: true,
    };

    fn leave() -> Event {
        Event::Lifecycle {
            now: 10,
            target: Target::Leaving("Terminated".into()),
        }
    }

    /// `check(state, event, expected state, expected actions)`
    fn check(state: State, event: Event, want: State, actions: &[Action]) {
        assert_eq!(
            next(state, &event, &CFG),
            (want, actions.to_vec()),
            "{state:?} + {event:?}"
        );
    }

    #[test]
    fn jobs() {
        check(
            S::Idle { since: 0 },
            Event::JobStarted,
            S::Busy,
            &[A::Protect],
        );
        check(
            S::Busy,
            Event::JobEnded { now: 50 },
            S::Idle { since: 50 },
            &[A::Unprotect],
        );
        check(S::Busy, Event::JobStarted, S::Busy, &[]);
        check(S::Busy, Event::Tick { now: 999 }, S::Busy, &[]);
        check(S::Parked, Event::JobStarted, S::Parked, &[]);
    }

    #[test]
    fn idle_scale_in() {
        check(
            S::Idle { since: 0 },
            Event::Tick { now: 119 },
            S::Idle { since: 0 },
            &[],
        );
        check(
            S::Idle { since: 0 },
            Event::Tick { now: 120 },
            S::Idle { since: 0 },
            &[A::CheckQueue],
        );
        check(
            S::Idle { since: 0 },
            Event::QueueChecked {
                now: 121,
                empty: false,
            },
            S::Idle { since: 121 },
            &[],
        );
        check(
            S::Idle { since: 0 },
            Event::QueueChecked {
                now: 121,
                empty: true,
            },
            S::Leaving,
            &[A::ScaleIn],
        );
        check(
            S::Idle { since: 100 },
            Event::QueueChecked {
                now: 121,
                empty: true,
            },
            S::Idle { since: 100 },
            &[],
        );
        check(
            S::Leaving,
            Event::ScaledIn {
                now: 122,
                lowered: true,
            },
            S::Idle { since: 122 },
            &[A::Record("scale-in")],
        );
        check(
            S::Leaving,
            Event::ScaledIn {
                now: 122,
                lowered: false,
            },
            S::Idle { since: 122 },
            &[],
        );
        check(S::Leaving, Event::Tick { now: 500 }, S::Leaving, &[]);
        let no_asg = Config {
            scale_in: false,
            ..CFG
        };
        assert_eq!(
            next(S::Idle { since: 0 }, &Event::Tick { now: 500 }, &no_asg),
            (S::Idle { since: 0 }, vec![])
        );
    }

    #[test]
    fn drain() {
        check(
            S::Idle { since: 0 },
            leave(),
            S::Parked,
            &[
                A::CompleteLifecycle,
                A::Record("drain"),
                A::Record("drained"),
            ],
        );
        check(
            S::Leaving,
            leave(),
            S::Parked,
            &[
                A::CompleteLifecycle,
                A::Record("drain"),
                A::Record("drained"),
            ],
        );
        check(
            S::Busy,
            leave(),
            S::Draining { next_heartbeat: 40 },
            &[A::Record("drain"), A::Heartbeat],
        );
        check(
            S::Draining { next_heartbeat: 40 },
            Event::Tick { now: 39 },
            S::Draining { next_heartbeat: 40 },
            &[],
        );
        check(
            S::Draining { next_heartbeat: 40 },
            Event::Tick { now: 40 },
            S::Draining { next_heartbeat: 70 },
            &[A::Heartbeat],
        );
        check(
            S::Draining { next_heartbeat: 40 },
            Event::JobEnded { now: 45 },
            S::Parked,
            &[A::Unprotect, A::CompleteLifecycle, A::Record("drained")],
        );
        check(
            S::Draining { next_heartbeat: 40 },
            leave(),
            S::Draining { next_heartbeat: 40 },
            &[],
        );
        check(S::Parked, leave(), S::Parked, &[]);
        check(
            S::Busy,
            Event::Lifecycle {
                now: 1,
                target: Target::InService,
            },
            S::Busy,
            &[],
        );
        assert_eq!(
            Target::parse("Warmed:Stopped"),
            Target::Leaving("Warmed:Stopped".into())
        );
        assert_eq!(Target::parse("InService\n"), Target::InService);
    }

    #[test]
    fn spot() {
        check(
            S::Busy,
            Event::SpotNotice,
            S::Interrupting,
            &[A::Record("spot-notice"), A::StopJob],
        );
        check(
            S::Draining { next_heartbeat: 9 },
            Event::SpotNotice,
            S::Interrupting,
            &[A::Record("spot-notice"), A::StopJob],
        );
        check(
            S::Interrupting,
            Event::JobEnded { now: 5 },
            S::Parked,
            &[A::Unprotect],
        );
        check(
            S::Idle { since: 0 },
            Event::SpotNotice,
            S::Parked,
            &[A::Record("spot-notice")],
        );
        check(S::Interrupting, Event::SpotNotice, S::Interrupting, &[]);
    }

    #[test]
    fn unfit() {
        check(
            S::Idle { since: 3 },
            Event::Unfit,
            S::Parked,
            &[A::MarkUnhealthy, A::Record("unhealthy")],
        );
        check(S::Busy, Event::Unfit, S::Busy, &[]);
        check(S::Parked, Event::Unfit, S::Parked, &[]);
    }

    #[test]
    fn signals() {
        check(S::Busy, Event::Signal, S::Stopping, &[A::StopJob]);
        check(
            S::Draining { next_heartbeat: 0 },
            Event::Signal,
            S::Stopping,
            &[A::StopJob],
        );
        check(S::Stopping, Event::Signal, S::Stopping, &[]);
        check(
            S::Stopping,
            Event::JobEnded { now: 1 },
            S::Done,
            &[A::Unprotect, A::Record("daemon-stop")],
        );
        for idle in [S::Idle { since: 0 }, S::Leaving, S::Parked] {
            check(idle, Event::Signal, S::Done, &[A::Record("daemon-stop")]);
        }
    }

    /// Every state × event pair is defined (no panics) and only `Idle` accepts jobs.
    #[test]
    fn every_state_and_event() {
        let states = [
            S::Idle { since: 0 },
            S::Busy,
            S::Leaving,
            S::Draining { next_heartbeat: 0 },
            S::Interrupting,
            S::Stopping,
            S::Parked,
            S::Done,
        ];
        let events = [
            Event::JobStarted,
            Event::JobEnded { now: 1 },
            Event::Tick { now: 1000 },
            Event::QueueChecked {
                now: 1000,
                empty: true,
            },
            Event::QueueChecked {
                now: 1000,
                empty: false,
            },
            Event::ScaledIn {
                now: 1000,
                lowered: true,
            },
            Event::ScaledIn {
                now: 1000,
                lowered: false,
            },
            Event::Lifecycle {
                now: 1,
                target: Target::InService,
            },
            leave(),
            Event::SpotNotice,
            Event::Signal,
            Event::Unfit,
        ];
        for s in states {
            for e in &events {
                let (after, actions) = next(s, e, &CFG);
                if after.accepts_jobs() {
                    assert!(
                        matches!(s, S::Idle { .. } | S::Busy | S::Leaving),
                        "{s:?} + {e:?} reopened polling"
                    );
                }
                if *e == Event::Signal {
                    assert!(
                        matches!(after, S::Done | S::Stopping),
                        "{s:?} ignored a signal"
                    );
                }
                if actions.contains(&A::CompleteLifecycle) {
                    assert_eq!(after, S::Parked, "{s:?} + {e:?}");
                }
            }
        }
    }
}
