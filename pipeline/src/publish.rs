//! Publishing a fix: the change committed on `janitor/{run_id}`, pushed to the repository's
//! remote with the GitHub token, and one pull request for that branch, opened or, when a
//! retried job finds it open, updated. Its body carries the validation before and after.

use std::path::Path;

use janitor_model::report::FixReport;
use janitor_services::github::GitHub;

/// Where and as whom fixes are published.
#[derive(Clone)]
pub struct PublishSettings {
    /// `https://api.github.com`, or a test's.
    pub api_url: String,
    pub token: String,
    pub author_name: String,
    pub author_email: String,
}

impl std::fmt::Debug for PublishSettings {
    /// Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishSettings")
            .field("api_url", &self.api_url)
            .field("author_name", &self.author_name)
            .finish()
    }
}

/// The branch a run's fix goes to.
pub fn branch(run_id: &str) -> String {
    format!("janitor/{run_id}")
}

/// One line of git's output (a branch, a URL), or a sentence with its error.
async fn git(repo: &Path, args: &[&str], config: &[String]) -> Result<String, String> {
    crate::fix::git_with(repo, config, args)
        .await
        .map(|out| out.trim().to_string())
}

/// `Authorization` for git over HTTPS with a token, as a config value (never in a URL).
fn auth_header(token: &str) -> String {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    format!("http.extraHeader=Authorization: Basic {basic}")
}

/// Commits the staged change, pushes the branch and opens or updates its pull request;
/// `fix.pr_status` and `fix.pr_url` say what became of it.
pub async fn publish(
    settings: &PublishSettings,
    ctx: &crate::JobContext,
    repo_dir: &Path,
    fix: &mut FixReport,
    before: &str,
    after: &str,
) {
    match publish_inner(settings, ctx, repo_dir, fix, before, after).await {
        Ok((status, url)) => {
            fix.pr_status = status.to_string();
            fix.pr_url = Some(url);
        }
        Err(e) => {
            tracing::warn!(error = %e, "the fix was not published; the patch is kept");
            fix.pr_status = "failed".to_string();
            fix.pr_error = Some(e);
        }
    }
}

async fn publish_inner(
    settings: &PublishSettings,
    ctx: &crate::JobContext,
    repo_dir: &Path,
    fix: &FixReport,
    before: &str,
    after: &str,
) -> Result<(&'static str, String), String> {
    let spec = &ctx.job.spec;
    let (owner, name) = (&spec.repo.organization, &spec.repo.name);
    let branch = branch(&ctx.job.run_id);
    let base = match &spec.repo.git_ref {
        Some(r) => r.clone(),
        None => git(repo_dir, &["rev-parse", "--abbrev-ref", "HEAD"], &[]).await?,
    };
    let summary = fix
        .attempts
        .last()
        .and_then(|a| a.result.as_ref())
        .and_then(|r| r.get("summary"))
        .and_then(|s| s.as_str())
        .unwrap_or("the agent's fix");
    let report = janitor_model::ledger::report_key(&ctx.job.run_id, &ctx.job.job_id);
    let message = format!(
        "janitor: {summary}\n\nValidated by janitord, run {} (job {}): it failed, then passed with this change.\nReport: {report}\n",
        ctx.job.run_id, ctx.job.job_id
    );
    let author = [
        "-c".to_string(),
        format!("user.name={}", settings.author_name),
        "-c".to_string(),
        format!("user.email={}", settings.author_email),
    ];
    git(repo_dir, &["checkout", "-q", "-B", &branch], &[]).await?;
    git(repo_dir, &["commit", "-q", "-m", &message], &author).await?;
    let remote = git(repo_dir, &["remote", "get-url", "origin"], &[])
        .await
        .map_err(|_| "the checkout has no remote to push to".to_string())?;
    let auth = if remote.starts_with("https://") {
        vec!["-c".to_string(), auth_header(&settings.token)]
    } else {
        Vec::new()
    };
    git(
        repo_dir,
        &[
            "push",
            "-q",
            "--force",
            "origin",
            &format!("HEAD:refs/heads/{branch}"),
        ],
        &auth,
    )
    .await?;
    let gh = GitHub::new(&settings.api_url, &settings.token).map_err(|e| e.to_string())?;
    let body = format!(
        "janitord found this repository failing and its agent fixed it.\n\n**Before:** {before}\n\n**After:** {after}\n\n**The fix:** {summary} ({} attempt(s) of {})\n\nRun `{}`, job `{}`; the full report is at `{report}`.\n",
        fix.attempts.len(),
        fix.max_attempts,
        ctx.job.run_id,
        ctx.job.job_id
    );
    let open = gh
        .open_pull(owner, name, &branch)
        .await
        .map_err(|e| e.to_string())?;
    match open {
        Some(pr) => {
            let updated = gh
                .update_pull(owner, name, pr.number, &serde_json::json!({ "body": body }))
                .await
                .map_err(|e| e.to_string())?;
            Ok(("updated", updated.html_url))
        }
        None => {
            let fields = serde_json::json!({
                "title": format!("janitor: {summary}"),
                "head": branch,
                "base": base,
                "body": body,
            });
            let created = gh
                .create_pull(owner, name, &fields)
                .await
                .map_err(|e| e.to_string())?;
            Ok(("created", created.html_url))
        }
    }
}
