//! Publishing a fix: the change committed on `janitor/{run_id}`, pushed to the URL built from
//! the job's validated organization and name on the configured GitHub host (never to a URL
//! the checkout names), the token given to git through its environment for that host only;
//! then one pull request for that branch, opened or, when a retried job finds it open,
//! updated. Title, body and commit message are redacted and capped.

use janitor_model::report::FixReport;
use janitor_services::github::GitHub;
use janitor_services::secrets::Redactor;

use crate::git::{Repo, Transport};

/// The longest pull request title sent.
pub const MAX_TITLE_CHARS: usize = 200;
/// The longest pull request body sent (GitHub's own limit is 65,536).
pub const MAX_BODY_CHARS: usize = 60_000;
/// The longest commit message written.
pub const MAX_MESSAGE_CHARS: usize = 8_000;

/// Where and as whom fixes are published.
#[derive(Clone)]
pub struct PublishSettings {
    /// `https://api.github.com`, or a test's.
    pub api_url: String,
    /// Where repositories are pushed: `https://github.com` (or a test's); a fix for `org/name`
    /// goes to `{git_url}/org/name`, and the token is sent nowhere else.
    pub git_url: String,
    pub token: String,
    pub author_name: String,
    pub author_email: String,
    /// The commit status's link, `{run_id}` and `{job_id}` replaced.
    pub status_target_url: Option<String>,
}

impl std::fmt::Debug for PublishSettings {
    /// Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishSettings")
            .field("api_url", &self.api_url)
            .field("git_url", &self.git_url)
            .field("author_name", &self.author_name)
            .finish()
    }
}

/// The branch a run's fix goes to.
pub fn branch(run_id: &str) -> String {
    format!("janitor/{run_id}")
}

/// One git call on the checkout, its output trimmed, or a sentence with its error.
async fn git(repo: &Repo, args: &[&str]) -> Result<String, String> {
    repo.run(args)
        .await
        .map(|o| o.trim().to_string())
        .map_err(|e| e.to_string())
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn capped(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Untrusted text made inert where GitHub reads plain text for references (a title, a commit
/// message): a zero-width space after each `@` (no mention), `#` (no `#12` or `org/repo#12`)
/// and `:` of `://` (no issue URL), and inside `GH-`, so that no closing keyword (`Closes
/// #12`) closes anything and no one is notified. It reads the same.
pub fn inert(text: &str) -> String {
    const ZWSP: char = '\u{200B}';
    let mut out = String::with_capacity(text.len() + 8);
    let mut prev = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        let next = chars.peek().copied();
        let breaks = match c {
            '@' | '#' => true,
            ':' => next == Some('/'),
            'H' | 'h' => matches!(prev, Some('G' | 'g')) && next == Some('-'),
            _ => false,
        };
        if breaks {
            out.push(ZWSP);
        }
        prev = Some(c);
    }
    out
}

/// Untrusted text as a fenced code block in a Markdown body: nothing in it is rendered
/// (no link, image, HTML, mention or reference), the fence longer than any run of backticks
/// in it; made [`inert`] too.
pub fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}text\n{}\n{fence}", inert(text.trim_end()))
}

/// Where `org/name` is pushed: built from the validated names on the configured host. `Err`
/// when the job's repository comes from somewhere else (a `url:` on another host): a fix
/// is never pushed anywhere but the repository's home on the configured host.
pub fn push_target(git_url: &str, repo: &janitor_model::config::RepoRef) -> Result<String, String> {
    let target = format!(
        "{}/{}/{}",
        git_url.trim_end_matches('/'),
        repo.organization,
        repo.name
    );
    let normal = |u: &str| {
        let u = u.trim_end_matches('/');
        let u = u.strip_suffix(".git").unwrap_or(u);
        if u.starts_with('/') {
            format!("file://{u}")
        } else if u.starts_with("file://") {
            u.to_string()
        } else {
            u.to_ascii_lowercase()
        }
    };
    let from = repo.clone_url();
    if normal(&from) != normal(&target) {
        return Err(format!(
            "the repository is cloned from {from}, not from {target} on the configured GitHub host: a fix is published only there (it is kept as a patch)"
        ));
    }
    Ok(target)
}

/// The transports and environment a push to `target` gets: the token only over HTTPS (or
/// plain HTTP to this machine's loopback, for tests), scoped to `git_url`.
fn push_access(git_url: &str, target: &str, token: &str) -> (Transport, Vec<(String, String)>) {
    let loopback = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|p| target.starts_with(p));
    if target.starts_with("https://") || loopback {
        (Transport::Remote, crate::git::token_env(git_url, token))
    } else if target.starts_with("file://") {
        (Transport::RemoteAndLocal, Vec::new())
    } else {
        (Transport::Remote, Vec::new())
    }
}

/// What the pull request tells: a fix of a failure, or a passing repository changed as its
/// prompt asked; and the validation before and after.
pub struct Story<'a> {
    pub mode: crate::fix::Mode,
    pub before: &'a str,
    pub after: &'a str,
    /// What the agent changed of the tests, when it did (the change was judged by the tests
    /// as they were before it).
    pub tests_note: Option<&'a str>,
}

/// Commits the staged change, pushes the branch and opens or updates its pull request;
/// `fix.pr_status` and `fix.pr_url` say what became of it.
pub async fn publish(
    settings: &PublishSettings,
    ctx: &crate::JobContext,
    repo: &Repo,
    redactor: &Redactor,
    fix: &mut FixReport,
    story: &Story<'_>,
) {
    match publish_inner(settings, ctx, repo, redactor, fix, story).await {
        Ok((status, url, head)) => {
            fix.pr_status = status.to_string();
            fix.pr_url = Some(url);
            fix.head_commit = head;
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
    repo: &Repo,
    redactor: &Redactor,
    fix: &FixReport,
    story: &Story<'_>,
) -> Result<(&'static str, String, Option<String>), String> {
    let (before, after) = (story.before, story.after);
    let (what, happened) = match story.mode {
        crate::fix::Mode::Fix => (
            "janitord found this repository failing and its agent fixed it.",
            "it failed, then passed with this change",
        ),
        crate::fix::Mode::Change => (
            "janitord validated this repository, and its agent carried out the maintainer's instructions; the change passes the same validation.",
            "it passed, and passes with this change",
        ),
    };
    let spec = &ctx.job.spec;
    let (owner, name) = (&spec.repo.organization, &spec.repo.name);
    let target = push_target(&settings.git_url, &spec.repo)?;
    let branch = branch(&ctx.job.run_id);
    let base = match &spec.repo.git_ref {
        Some(r) => r.clone(),
        None => git(repo, &["rev-parse", "--abbrev-ref", "HEAD"]).await?,
    };
    // What the agent and the worker wrote reaches GitHub only redacted and capped.
    let clean = |text: &str, max: usize| capped(&redactor.redact(text), max);
    let summary = fix
        .attempts
        .last()
        .and_then(|a| a.result.as_ref())
        .and_then(|r| r.get("summary"))
        .and_then(|s| s.as_str())
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "the agent's fix".to_string());
    let summary = inert(&clean(&summary, MAX_TITLE_CHARS - "janitor: ".len()));
    let report = janitor_model::ledger::report_key(&ctx.job.run_id, &ctx.job.job_id);
    let message = clean(
        &format!(
            "janitor: {summary}\n\nValidated by janitord, run {} (job {}): {happened}.\nReport: {report}\n",
            ctx.job.run_id, ctx.job.job_id
        ),
        MAX_MESSAGE_CHARS,
    );
    git(repo, &["checkout", "-q", "-B", &branch]).await?;
    let author_name = format!("user.name={}", settings.author_name);
    let author_email = format!("user.email={}", settings.author_email);
    git(
        repo,
        &[
            "-c",
            &author_name,
            "-c",
            &author_email,
            "commit",
            "-q",
            "--no-verify",
            "-m",
            &message,
        ],
    )
    .await?;
    let head = git(repo, &["rev-parse", "HEAD"]).await.ok();
    let (transport, env) = push_access(&settings.git_url, &target, &settings.token);
    let refspec = format!("HEAD:refs/heads/{branch}");
    repo.run_with(
        &["push", "-q", "--force", "--no-verify", &target, &refspec],
        transport,
        &env,
    )
    .await
    .map_err(|e| redactor.redact(&e.to_string()))?;
    let gh = GitHub::new(&settings.api_url, &settings.token).map_err(|e| e.to_string())?;
    // The worker's failure and the agent's words are fenced: the body renders none of them.
    let body = clean(
        &format!(
            "{what}\n\n**Before:**{}\n\n**After:** {after}\n\n**The change**, in the agent's words ({} attempt(s) of {}):\n\n{}\n{}\nRun `{}`, job `{}`; the full report is at `{report}`.\n",
            match story.mode {
                // The worker's failure: its words, fenced.
                crate::fix::Mode::Fix => format!("\n\n{}", fenced(&clean(before, MAX_BODY_CHARS / 4))),
                // janitord's own count of the tests passed.
                crate::fix::Mode::Change => format!(" {before}"),
            },
            fix.attempts.len(),
            fix.max_attempts,
            fenced(&summary),
            story.tests_note.map(|n| format!("\n**Tests:**\n\n{}\n", fenced(&clean(n, MAX_BODY_CHARS / 8)))).unwrap_or_default(),
            ctx.job.run_id,
            ctx.job.job_id
        ),
        MAX_BODY_CHARS,
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
            Ok(("updated", updated.html_url, head))
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
            Ok(("created", created.html_url, head))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use janitor_model::config::RepoRef;

    fn repo(url: Option<&str>) -> RepoRef {
        RepoRef {
            organization: "runpod-workers".into(),
            name: "worker-basic".into(),
            url: url.map(str::to_string),
            git_ref: None,
        }
    }

    #[test]
    fn the_push_goes_only_to_the_repository_on_the_configured_host() {
        let gh = "https://github.com";
        let want = "https://github.com/runpod-workers/worker-basic";
        assert_eq!(push_target(gh, &repo(None)).unwrap(), want);
        assert_eq!(
            push_target(
                gh,
                &repo(Some("https://github.com/runpod-workers/worker-basic.git"))
            )
            .unwrap(),
            want
        );
        let elsewhere = push_target(
            gh,
            &repo(Some("https://evil.example/runpod-workers/worker-basic")),
        )
        .unwrap_err();
        assert!(
            elsewhere.contains("not from https://github.com/runpod-workers/worker-basic"),
            "{elsewhere}"
        );
        assert!(push_target(gh, &repo(Some("https://github.com/other/worker-basic"))).is_err());
        assert_eq!(
            push_target(
                "file:///srv/git",
                &repo(Some("/srv/git/runpod-workers/worker-basic"))
            )
            .unwrap(),
            "file:///srv/git/runpod-workers/worker-basic"
        );
    }

    #[test]
    fn the_token_goes_over_https_or_loopback_only() {
        let (_, env) = push_access("https://github.com", "https://github.com/o/n", "t");
        assert_eq!(env.len(), 3);
        let (_, env) = push_access("http://127.0.0.1:9", "http://127.0.0.1:9/o/n", "t");
        assert_eq!(env.len(), 3);
        let (_, env) = push_access("http://git.example", "http://git.example/o/n", "t");
        assert!(env.is_empty(), "never in clear over a network");
        let (t, env) = push_access("file:///srv", "file:///srv/o/n", "t");
        assert!(env.is_empty());
        assert_eq!(t, Transport::RemoteAndLocal);
    }

    /// A summary that mentions, closes, links and breaks out of its fence does none of it.
    #[test]
    fn untrusted_text_cannot_mention_close_or_render() {
        let hostile = "Closes #12, fixes org/repo#3 and GH-7, see https://github.com/o/r/issues/9 cc @maintainer";
        let title = inert(hostile);
        for active in ["#12", "#3", "GH-7", "https://", "@maintainer"] {
            assert!(!title.contains(active), "{active} in {title}");
        }
        assert_eq!(title.replace('\u{200B}', ""), hostile, "it reads the same");
        let body = fenced("```\n![x](https://evil.example/t.png) <img src=x> ````");
        assert!(body.starts_with("`````text\n"), "{body}");
        assert!(body.ends_with("\n`````"), "{body}");
        assert_eq!(fenced("plain"), "```text\nplain\n```");
    }

    #[test]
    fn long_texts_are_capped() {
        assert_eq!(capped("abcdef", 4), "abc…");
        assert_eq!(capped("abc", 4), "abc");
    }
}
