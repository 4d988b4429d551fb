//! `janitorctl show RUN --format markdown`: a run as GitHub-flavoured Markdown for a CI summary
//! (`$GITHUB_STEP_SUMMARY`): a header, one table row per repository (verdict, time, tests,
//! first cause, pull request, cost), and each repository's tests folded in `<details>`. Every
//! text that comes from a repository, its worker or its agent is escaped: it can neither open
//! a link, an image nor HTML in the summary.

use std::time::Duration;

use janitor_model::duration;
use janitor_model::report::{JobStatus, TestStatus};

use crate::ledger::{JobState, JobView, RunView};
use crate::output::when;

/// The most characters of a cause shown in a cell.
const CAUSE_CHARS: usize = 200;

/// Text safe in a table cell: HTML's `&<>` as entities, Markdown's punctuation backslashed,
/// line breaks as spaces, bounded.
pub fn cell(text: &str, max_chars: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut = crate::page::bounded(&one_line, max_chars);
    let mut out = String::with_capacity(cut.len());
    for c in cut.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '+' | '!' | '|' | '~' | '{'
            | '}' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn mark(state: JobState, status: Option<JobStatus>) -> &'static str {
    match (state, status) {
        (JobState::Finished, Some(JobStatus::Succeeded)) => "✅",
        (JobState::Finished, Some(JobStatus::Fixed)) => "🔧",
        (JobState::Finished, Some(JobStatus::Changed)) => "✏️",
        (JobState::Finished, Some(JobStatus::TimedOut)) => "⏱️",
        (JobState::Finished, Some(JobStatus::Error)) => "⚠️",
        (JobState::Finished, Some(JobStatus::Cancelled)) => "⏹️",
        (JobState::Finished, Some(_)) => "❌",
        _ => "⏳",
    }
}

fn took(seconds: Option<f64>) -> String {
    seconds.map_or(String::new(), |s| {
        duration::format(Duration::from_secs_f64(s.max(0.0)))
    })
}

/// The pull request cell: `[#12](url)` for a URL GitHub gave.
fn pr_cell(j: &JobView) -> String {
    let Some(url) = crate::page::pr_url(j) else {
        return String::new();
    };
    // Only an https URL of plain characters becomes a link; anything else is shown as text.
    if !crate::page::plain_https(url) {
        return cell(url, 120);
    }
    let number = url.rsplit('/').next().unwrap_or("PR");
    format!("[#{}]({url})", cell(number, 12))
}

fn cost(j: &JobView) -> String {
    let Some(r) = &j.report else {
        return String::new();
    };
    if r.estimated_cost_usd.is_none() && r.model_cost_usd.is_none() {
        String::new()
    } else {
        format!("${:.2}", crate::page::report_cost(r))
    }
}

/// The run as Markdown.
pub fn run_markdown(view: &RunView) -> String {
    let passed = view.succeeded();
    let mut out = format!(
        "## janitor run `{}`: {passed}/{} repositories passed\n\n",
        cell(&view.run_id, 60),
        view.jobs.len()
    );
    let mut facts = vec![
        format!("Configuration `{}`", cell(&view.config_path, 120)),
        format!("started by {}", cell(&view.created_by, 80)),
        when(view.created_at),
    ];
    if let Some(end) = view.finished_at() {
        facts.push(format!(
            "took {}",
            duration::format(Duration::from_secs_f64(
                (end - view.created_at).as_seconds_f64().max(0.0)
            ))
        ));
    } else {
        facts.push("not finished".to_string());
    }
    let reports: Vec<_> = view.jobs.iter().filter_map(|j| j.report.as_ref()).collect();
    if !reports.is_empty() {
        let spent: f64 = reports.iter().map(|r| crate::page::report_cost(r)).sum();
        let estimate = view
            .estimated_cost_usd
            .map_or(String::new(), |e| format!(" (estimate ${e:.2})"));
        facts.push(format!("cost ${spent:.2}{estimate}"));
    }
    out.push_str(&facts.join(" · "));
    let pools: Vec<String> = crate::output::pool_stats(view)
        .into_iter()
        .map(|(p, jobs, passed, cost)| {
            format!("`{}` {passed}/{jobs} passed, ${cost:.2}", cell(&p, 40))
        })
        .collect();
    if !pools.is_empty() {
        out.push_str(&format!("\n\nBy pool: {}", pools.join(" · ")));
    }
    for n in &view.not_run {
        out.push_str(&format!(
            "\n\nNot run: {}: {}",
            cell(&n.name, 100),
            cell(&n.reason, CAUSE_CHARS)
        ));
    }
    out.push_str("\n\n| | repository | verdict | time | tests | first cause | PR | cost |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for j in &view.jobs {
        let tests = crate::page::tests_passed(j);
        let cause = match j.status {
            Some(JobStatus::Succeeded) => String::new(),
            _ => j
                .reason
                .as_deref()
                .map_or(String::new(), |r| cell(r, CAUSE_CHARS)),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {tests} | {cause} | {} | {} |\n",
            mark(j.state, j.status),
            cell(&j.repository, 100),
            crate::page::verdict(j),
            took(j.duration_seconds),
            pr_cell(j),
            cost(j),
        ));
    }
    for j in &view.jobs {
        let Some(t) = j.tests.as_ref().filter(|t| !t.results.is_empty()) else {
            continue;
        };
        out.push_str(&format!(
            "\n<details><summary>Tests of {} ({}/{} passed, from {})</summary>\n\n| test | result | time | cause |\n| --- | --- | --- | --- |\n",
            cell(&j.repository, 100),
            t.passed,
            t.total,
            cell(&t.source, 80)
        ));
        for r in &t.results {
            let result = match r.status {
                TestStatus::Passed => "✅ passed",
                TestStatus::Failed => "❌ failed",
                TestStatus::TimedOut => "⏱️ timed out",
                TestStatus::NotRun => "– not run",
            };
            let mut cause = r
                .error
                .as_deref()
                .map_or(String::new(), |e| cell(e, CAUSE_CHARS));
            if r.output_matches == Some(false) {
                if !cause.is_empty() {
                    cause.push_str("; ");
                }
                cause.push_str("output differs from expectedOutput \\(reported, not failed\\)");
            }
            out.push_str(&format!(
                "| {} | {result} | {:.1} s | {cause} |\n",
                cell(&r.name, 100),
                r.duration_seconds
            ));
        }
        out.push_str("\n</details>\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_cannot_open_links_images_or_html() {
        let evil =
            "![x](https://evil.example/p.png) <img src=x onerror=alert(1)> | col [a](b) `c`\nnext";
        let c = cell(evil, 500);
        assert_eq!(
            c,
            "\\!\\[x\\]\\(https://evil.example/p.png\\) &lt;img src=x onerror=alert\\(1\\)&gt; \\| col \\[a\\]\\(b\\) \\`c\\` next"
        );
        assert!(!c.contains('<') && !c.contains("]("));
        assert_eq!(cell("abcdef", 3), "abc…");
    }

    #[test]
    fn a_run_over_pools_says_each_pools_share_and_what_was_not_run() {
        let mut view = crate::output::tests::pools_view("needs [80 GB](https://x)");
        let md = run_markdown(&view);
        assert!(
            md.contains("\n\nBy pool: `cpu` 1/1 passed, $0.00 · `gpu-24` 1/2 passed, $0.00"),
            "{md}"
        );
        assert!(
            md.contains("\n\nNot run: acme/huge: needs \\[80 GB\\]\\(https://x\\)"),
            "{md}"
        );
        // One pool: no line.
        view.jobs[0].pool = Some("gpu-24".into());
        assert!(!run_markdown(&view).contains("By pool"));
    }
}
