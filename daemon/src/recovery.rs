//! Restart recovery: containers an earlier janitord on this instance left behind (it crashed or
//! was killed) are recorded as crashed attempts, then removed. Their jobs come back through the
//! queue.

use janitor_services::engine::ContainerEngine;

use crate::event_loop::{Daemon, Services};

impl<X: Services> Daemon<X> {
    pub(crate) async fn recover_orphans(&self) {
        let orphans = match self.engine.managed_containers(&self.instance.id).await {
            Ok(o) => o,
            Err(e) => {
                return tracing::warn!(error = %e, "could not look for containers left by an earlier janitord")
            }
        };
        for (name, labels) in orphans {
            tracing::warn!(container = %name, "removing a container left by an earlier janitord");
            if let (Some(run_id), Some(job_id)) =
                (labels.get("janitor.run_id"), labels.get("janitor.job_id"))
            {
                let attempt = labels
                    .get("janitor.attempt")
                    .cloned()
                    .unwrap_or_else(|| "unknown".to_string());
                // The record first: a kill between the two leaves the container, found again.
                self.recorder.crashed(run_id, job_id, &attempt, &name).await;
                if self.settings.test_kill_after_crash_record {
                    tracing::warn!(container = %name, "test hook: aborting after the crash record, before the removal");
                    // A test-only fault hook standing for SIGKILL at this point: no cleanup runs.
                    std::process::abort();
                }
            }
            self.engine.remove(&name).await;
        }
    }
}
