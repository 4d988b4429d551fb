//! The verdict on the commit: with `report_status: true` and the publish token, a commit status
//! (`context` `janitor/validate`) on the validated commit, and on a fix's or change's pull
//! request head. The description is the first cause (redacted, capped) or `passed N/M tests`;
//! a retried job that finds its own status already there does not post it again. GitHub's
//! 5xx answers and rate limits are retried by the client; a status that cannot be posted is
//! recorded in the report, never a job failure.

use janitor_model::report::{JobStatus, PostedStatus, TestMode, TestsReport};
use janitor_services::github::GitHub;
use janitor_services::secrets::Redactor;

use crate::publish::PublishSettings;

/// The status's context on GitHub.
pub const CONTEXT: &str = "janitor/validate";
/// GitHub's longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 140;

/// The state a verdict posts on the validated commit; `None`: nothing is posted (the job is
/// tried again, or was not judged).
pub fn state(status: JobStatus) -> Option<&'static str> {
    match status {
        JobStatus::Succeeded | JobStatus::Changed => Some("success"),
        JobStatus::Failed | JobStatus::Fixed | JobStatus::Unfixable | JobStatus::TimedOut => {
            Some("failure")
        }
        JobStatus::Error => Some("error"),
        JobStatus::Interrupted | JobStatus::Rejected | JobStatus::Cancelled => None,
    }
}

/// `passed 3/3 tests`, or `passed` for a CMD run to its exit.
fn passed(tests: Option<&TestsReport>) -> String {
    match tests {
        Some(t) if t.mode == TestMode::Server => format!("passed {}/{} tests", t.passed, t.total),
        _ => "passed".to_string(),
    }
}

fn capped(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= MAX_DESCRIPTION_CHARS {
        return one;
    }
    let mut out: String = one.chars().take(MAX_DESCRIPTION_CHARS - 1).collect();
    out.push('…');
    out
}

/// What is posted where: (commit, state, description).
pub fn plan(
    commit: Option<&str>,
    status: JobStatus,
    first_reason: Option<&str>,
    tests: Option<&TestsReport>,
    head_commit: Option<&str>,
    redactor: &Redactor,
) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    let cause = || capped(&redactor.redact(first_reason.unwrap_or("failed")));
    if let (Some(sha), Some(state)) = (commit, state(status)) {
        let description = match status {
            JobStatus::Succeeded | JobStatus::Changed => passed(tests),
            JobStatus::Fixed => capped(&format!(
                "{}; fixed in the pull request",
                redactor.redact(first_reason.unwrap_or("failed"))
            )),
            _ => cause(),
        };
        out.push((sha.to_string(), state, description));
    }
    if let (Some(head), JobStatus::Fixed | JobStatus::Changed) = (head_commit, status) {
        out.push((
            head.to_string(),
            "success",
            "this change passes the validation".to_string(),
        ));
    }
    out
}

/// Posts the planned statuses; each one's outcome is recorded.
pub async fn post(
    settings: &PublishSettings,
    owner: &str,
    repo: &str,
    planned: Vec<(String, &'static str, String)>,
    target_url: Option<String>,
) -> Vec<PostedStatus> {
    let gh = match GitHub::new(&settings.api_url, &settings.token) {
        Ok(gh) => gh,
        Err(e) => {
            return planned
                .into_iter()
                .map(|(commit, state, description)| PostedStatus {
                    commit,
                    state: state.to_string(),
                    description,
                    target_url: target_url.clone(),
                    outcome: "failed".to_string(),
                    error: Some(e.to_string()),
                })
                .collect()
        }
    };
    let mut out = Vec::new();
    for (commit, state, description) in planned {
        let mut posted = PostedStatus {
            commit: commit.clone(),
            state: state.to_string(),
            description: description.clone(),
            target_url: target_url.clone(),
            outcome: "posted".to_string(),
            error: None,
        };
        // A retried job (the message delivered again) finds its own status: once is enough.
        let already = gh
            .commit_statuses(owner, repo, &commit)
            .await
            .unwrap_or_default()
            .iter()
            .any(|s| {
                s.get("context").and_then(|v| v.as_str()) == Some(CONTEXT)
                    && s.get("state").and_then(|v| v.as_str()) == Some(state)
                    && s.get("description").and_then(|v| v.as_str()) == Some(description.as_str())
            });
        if already {
            posted.outcome = "already_posted".to_string();
            out.push(posted);
            continue;
        }
        let mut fields = serde_json::json!({
            "state": state,
            "context": CONTEXT,
            "description": description,
        });
        if let Some(url) = &target_url {
            fields["target_url"] = serde_json::Value::String(url.clone());
        }
        if let Err(e) = gh.create_status(owner, repo, &commit, &fields).await {
            tracing::warn!(error = %e, commit, "the commit status was not posted");
            posted.outcome = "failed".to_string();
            posted.error = Some(e.to_string());
        }
        out.push(posted);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verdict_posts_its_state_and_cause() {
        let r = Redactor::new(vec!["hf_secretvalue".to_string()]);
        let p = |status, head| {
            plan(
                Some("abc123"),
                status,
                Some("test: `oom` failed: CUDA out of memory (token hf_secretvalue)"),
                None,
                head,
                &r,
            )
        };
        assert_eq!(
            p(JobStatus::Succeeded, None),
            [("abc123".to_string(), "success", "passed".to_string())]
        );
        let failed = p(JobStatus::Failed, None);
        assert_eq!(failed[0].1, "failure");
        assert_eq!(
            failed[0].2,
            "test: `oom` failed: CUDA out of memory (token ***)"
        );
        assert_eq!(p(JobStatus::Error, None)[0].1, "error");
        assert!(p(JobStatus::Interrupted, None).is_empty());
        let fixed = p(JobStatus::Fixed, Some("def456"));
        assert_eq!(fixed.len(), 2);
        assert_eq!(fixed[0].1, "failure");
        assert!(
            fixed[0].2.ends_with("; fixed in the pull request"),
            "{}",
            fixed[0].2
        );
        assert_eq!(
            fixed[1],
            (
                "def456".to_string(),
                "success",
                "this change passes the validation".to_string()
            )
        );
        let long = "x".repeat(400);
        let capped = plan(Some("a"), JobStatus::Failed, Some(&long), None, None, &r);
        assert_eq!(capped[0].2.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(plan(None, JobStatus::Failed, None, None, None, &r).is_empty());
    }
}
