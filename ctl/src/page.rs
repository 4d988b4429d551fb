//! `janitorctl show RUN --html FILE`: the run as one self-contained HTML page (inline CSS and
//! SVG, no script, nothing fetched): the run's header, the verdict table, each repository's
//! tests, first cause and ERROR lines, its log stream and pull request, and a timeline of
//! instances × time with each job's steps. One column below 700 px, dark with the reader's
//! `prefers-color-scheme`, table headers and a text alternative for the timeline. Every text
//! from a repository, its worker or its agent is HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use janitor_model::duration;
use janitor_model::report::{JobStatus, StepName, StepStatus, TestStatus};

use crate::ledger::{JobState, JobView, RunView};
use crate::output::when;

/// `text` cut to `max_chars`, with an ellipsis when cut.
pub fn bounded(text: &str, max_chars: usize) -> String {
    let mut cut: String = text.chars().take(max_chars).collect();
    if text.chars().count() > max_chars {
        cut.push('…');
    }
    cut
}

/// Whether `url` is an `https://` URL of plain characters (one that may become a link).
pub fn plain_https(url: &str) -> bool {
    url.starts_with("https://")
        && url
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~/:%?=&#+".contains(c))
}

/// Text as HTML: `&<>"'` as entities, bounded.
pub fn esc(text: &str, max_chars: usize) -> String {
    let cut = bounded(text, max_chars);
    let mut out = String::with_capacity(cut.len());
    for c in cut.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root{--bg:#fff;--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--info:#0969da;--bar:#eaeef2}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#8d96a0;--line:#30363d;--ok:#3fb950;--bad:#f85149;--warn:#d29922;--info:#58a6ff;--bar:#161b22}}
*{box-sizing:border-box}body{margin:0;padding:16px;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}.muted{color:var(--muted)}
dl.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:4px 16px;margin:8px 0}
dl.facts dt{color:var(--muted);font-size:12px}dl.facts dd{margin:0}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
th{font-size:12px;color:var(--muted)}td.num{white-space:nowrap}
.v-succeeded,.v-fixed,.v-changed{color:var(--ok)}.v-failed,.v-unfixable,.v-timed_out{color:var(--bad)}.v-error{color:var(--warn)}.v-running,.v-queued{color:var(--info)}
details{border:1px solid var(--line);border-radius:6px;padding:6px 10px;margin:8px 0}summary{cursor:pointer}
pre{white-space:pre-wrap;word-break:break-word;font-size:12px;background:var(--bar);padding:6px;border-radius:4px}
svg text{fill:var(--fg);font-size:11px}.lane{fill:var(--bar)}
.s-clone{fill:#8c959f}.s-preflight{fill:#bf8700}.s-build{fill:#0969da}.s-test,.s-run{fill:#1a7f37}.s-gpu{fill:#8250df}.s-agent{fill:#d1242f}
.legend span{display:inline-block;margin-right:12px}
@media (max-width:700px){body{padding:8px}table.verdicts thead{display:none}table.verdicts tr{display:block;border-bottom:1px solid var(--line);padding:6px 0}table.verdicts td{display:block;border:0;padding:2px 0}table.verdicts td[data-label]::before{content:attr(data-label) ": ";color:var(--muted);font-size:12px}}
"#;

fn step_status(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::TimedOut => "timed out",
        StepStatus::Interrupted => "interrupted",
        StepStatus::NotRun => "not run",
        StepStatus::Error => "error",
    }
}

fn secs(s: f64) -> String {
    duration::format(Duration::from_secs_f64(s.max(0.0)))
}

/// What a job cost: the instance's estimate and the model calls.
pub fn report_cost(r: &janitor_model::report::Report) -> f64 {
    r.estimated_cost_usd.unwrap_or(0.0) + r.model_cost_usd.unwrap_or(0.0)
}

/// The job's pull request, if it opened one.
pub fn pr_url(j: &JobView) -> Option<&str> {
    j.report
        .as_ref()
        .and_then(|r| r.fix.as_ref())
        .and_then(|f| f.pr_url.as_deref())
}

/// `passed/total` of the job's tests, or empty without tests.
pub fn tests_passed(j: &JobView) -> String {
    j.tests
        .as_ref()
        .filter(|t| t.total > 0)
        .map_or(String::new(), |t| format!("{}/{}", t.passed, t.total))
}

/// The job's verdict word, or where it stands.
pub fn verdict(j: &JobView) -> &'static str {
    match (j.state, j.status) {
        (JobState::Finished, Some(s)) => s.as_str(),
        (JobState::Finished, None) => "unknown",
        (JobState::Running, _) => "running",
        (JobState::Queued, _) => "queued",
    }
}

/// A plain https URL becomes a link; anything else stays text.
fn link(url: &str, text: &str) -> String {
    if plain_https(url) {
        format!("<a href=\"{}\">{}</a>", esc(url, 500), esc(text, 100))
    } else {
        esc(url, 200)
    }
}

/// The timeline: one lane per instance, one bar per started job from its start to its end,
/// split into its steps.
fn timeline(view: &RunView) -> String {
    let start = view.created_at;
    let mut lanes: BTreeMap<String, Vec<&JobView>> = BTreeMap::new();
    for j in &view.jobs {
        if let (Some(i), Some(_)) = (&j.instance_id, j.started_at) {
            lanes.entry(i.clone()).or_default().push(j);
        }
    }
    let end = view
        .jobs
        .iter()
        .filter_map(|j| j.finished_at.or(j.started_at))
        .max()
        .unwrap_or(start);
    let span = (end - start).as_seconds_f64().max(1.0);
    let (label_w, width, lane_h) = (130.0, 1000.0, 22.0);
    let height = lanes.len() as f64 * lane_h + 24.0;
    let x = |t: f64| label_w + (width - label_w - 10.0) * (t / span).clamp(0.0, 1.0);
    let mut svg = format!(
        "<svg role=\"img\" aria-labelledby=\"tl-title tl-desc\" viewBox=\"0 0 {width} {height}\" width=\"100%\" preserveAspectRatio=\"xMinYMin meet\"><title id=\"tl-title\">Timeline of the run</title><desc id=\"tl-desc\">{} instances, {} jobs over {}; the table below the timeline lists the same.</desc>",
        lanes.len(),
        lanes.values().map(Vec::len).sum::<usize>(),
        secs(span)
    );
    for (row, (instance, jobs)) in lanes.iter().enumerate() {
        let y = row as f64 * lane_h;
        let _ = write!(
            svg,
            "<rect class=\"lane\" x=\"{label_w}\" y=\"{y}\" width=\"{}\" height=\"{}\"/><text x=\"0\" y=\"{}\">{}</text>",
            width - label_w - 10.0,
            lane_h - 4.0,
            y + 13.0,
            esc(instance, 19)
        );
        for j in jobs {
            let Some(s) = j.started_at else { continue };
            let t0 = (s - start).as_seconds_f64();
            let t1 = j.finished_at.map_or(span, |f| (f - start).as_seconds_f64());
            let name = j.repository.rsplit('/').next().unwrap_or(&j.repository);
            let _ = write!(
                svg,
                "<g class=\"job\" data-job=\"{}\"><title>{}: {} ({})</title>",
                esc(&j.job_id, 100),
                esc(name, 100),
                verdict(j),
                secs(t1 - t0)
            );
            // The steps in order, each its share of the bar.
            let steps: Vec<(StepName, f64)> = j
                .report
                .as_ref()
                .map(|r| {
                    r.steps
                        .iter()
                        .map(|st| (st.name, st.duration_seconds))
                        .collect()
                })
                .unwrap_or_default();
            let mut at = t0;
            if steps.is_empty() {
                let _ = write!(
                    svg,
                    "<rect class=\"s-run\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{}\"/>",
                    x(t0),
                    y + 2.0,
                    (x(t1) - x(t0)).max(1.0),
                    lane_h - 8.0
                );
            }
            for (step, d) in steps {
                let _ = write!(
                    svg,
                    "<rect class=\"s-{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{}\"/>",
                    step.as_str(),
                    x(at),
                    y + 2.0,
                    (x(at + d) - x(at)).max(0.5),
                    lane_h - 8.0
                );
                at += d;
            }
            svg.push_str("</g>");
        }
    }
    let _ = write!(
        svg,
        "<text x=\"{label_w}\" y=\"{}\">0</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text></svg>",
        height - 6.0,
        width - 10.0,
        height - 6.0,
        secs(span)
    );
    svg
}

/// The run as one HTML page.
pub fn run_html(view: &RunView) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let passed = view.succeeded();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\"><title>janitor run {}</title><style>{STYLE}</style></head><body>",
        esc(&view.run_id, 60)
    );
    let _ = write!(
        h,
        "<header><h1>janitor run {}</h1><p class=\"muted\">{passed} of {} repositories passed</p><dl class=\"facts\">",
        esc(&view.run_id, 60),
        view.jobs.len()
    );
    let mut fact = |k: &str, v: String| {
        let _ = write!(h, "<div><dt>{k}</dt><dd>{v}</dd></div>");
    };
    fact("Started by", esc(&view.created_by, 80));
    fact("Started", when(view.created_at));
    fact("Configuration", esc(&view.config_path, 120));
    fact(
        "Duration",
        view.finished_at().map_or("not finished".to_string(), |e| {
            secs((e - view.created_at).as_seconds_f64())
        }),
    );
    let reports: Vec<_> = view.jobs.iter().filter_map(|j| j.report.as_ref()).collect();
    let spent: f64 = reports.iter().map(|r| report_cost(r)).sum();
    fact(
        "Cost",
        match view.estimated_cost_usd {
            Some(e) => format!("${spent:.2} (estimate ${e:.2})"),
            None => format!("${spent:.2}"),
        },
    );
    for (p, jobs, passed, cost) in crate::output::pool_stats(view) {
        fact(
            &format!("Pool {}", esc(&p, 40)),
            format!("{passed} of {jobs} passed, ${cost:.2}"),
        );
    }
    for n in &view.not_run {
        fact(
            "Not run",
            format!("{}: {}", esc(&n.name, 100), esc(&n.reason, 300)),
        );
    }
    h.push_str("</dl></header><main><h2 id=\"timeline\">Timeline</h2><div class=\"legend\">");
    for s in ["clone", "preflight", "build", "test", "gpu", "agent"] {
        let _ = write!(
            h,
            "<span><svg width=\"10\" height=\"10\" aria-hidden=\"true\"><rect class=\"s-{s}\" width=\"10\" height=\"10\"/></svg> {s}</span>"
        );
    }
    h.push_str("</div>");
    h.push_str(&timeline(view));
    h.push_str("<h2 id=\"verdicts\">Verdicts</h2><table class=\"verdicts\"><thead><tr><th scope=\"col\">Repository</th><th scope=\"col\">Verdict</th><th scope=\"col\">Time</th><th scope=\"col\">Tests</th><th scope=\"col\">First cause</th><th scope=\"col\">Pull request</th><th scope=\"col\">Cost</th></tr></thead><tbody>");
    for j in &view.jobs {
        let v = verdict(j);
        let tests = tests_passed(j);
        let cause = match j.status {
            Some(JobStatus::Succeeded) => String::new(),
            _ => j.reason.as_deref().map_or(String::new(), |r| esc(r, 300)),
        };
        let pr = pr_url(j).map_or(String::new(), |u| {
            link(u, u.rsplit('/').next().unwrap_or("PR"))
        });
        let cost = j
            .report
            .as_ref()
            .map_or(String::new(), |r| format!("${:.2}", report_cost(r)));
        let _ = write!(
            h,
            "<tr id=\"row-{}\"><th scope=\"row\" data-label=\"Repository\"><a href=\"#job-{}\">{}</a></th><td data-label=\"Verdict\" class=\"v-{v}\">{v}</td><td data-label=\"Time\" class=\"num\">{}</td><td data-label=\"Tests\" class=\"num\">{tests}</td><td data-label=\"First cause\">{cause}</td><td data-label=\"Pull request\">{pr}</td><td data-label=\"Cost\" class=\"num\">{cost}</td></tr>",
            esc(&j.job_id, 100),
            esc(&j.job_id, 100),
            esc(&j.repository, 100),
            j.duration_seconds.map_or(String::new(), secs),
        );
    }
    h.push_str("</tbody></table><h2 id=\"jobs\">Repositories</h2>");
    for j in &view.jobs {
        let v = verdict(j);
        let _ = write!(
            h,
            "<details id=\"job-{}\"><summary><strong>{}</strong> <span class=\"v-{v}\">{v}</span></summary>",
            esc(&j.job_id, 100),
            esc(&j.repository, 100)
        );
        if let Some(r) = &j.report {
            if let Some(reason) = &r.reason {
                let _ = write!(h, "<p>{}</p>", esc(reason, 2000));
            }
            if let Some(l) = &r.logs {
                let _ = write!(
                    h,
                    "<p class=\"muted\">Log stream {} in {} (<code>janitorctl logs {}</code>)</p>",
                    esc(&l.stream, 200),
                    esc(&l.group, 200),
                    esc(&j.job_id, 100)
                );
            }
            if !r.errors.first.is_empty() {
                let _ = write!(
                    h,
                    "<p>{} ERROR line(s) no expected_errors pattern explains:</p><pre>{}</pre>",
                    r.errors.count,
                    r.errors
                        .first
                        .iter()
                        .map(|l| esc(l, 1000))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            h.push_str("<table><thead><tr><th scope=\"col\">Step</th><th scope=\"col\">Status</th><th scope=\"col\">Time</th><th scope=\"col\">Detail</th></tr></thead><tbody>");
            for st in &r.steps {
                let _ = write!(
                    h,
                    "<tr><th scope=\"row\">{}</th><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                    st.name.as_str(),
                    step_status(st.status),
                    secs(st.duration_seconds),
                    esc(&st.detail, 600)
                );
            }
            h.push_str("</tbody></table>");
        }
        if let Some(t) = j.tests.as_ref().filter(|t| !t.results.is_empty()) {
            let _ = write!(
                h,
                "<p>Tests from {}: {}/{} passed</p><table><thead><tr><th scope=\"col\">Test</th><th scope=\"col\">Result</th><th scope=\"col\">Time</th><th scope=\"col\">Cause</th></tr></thead><tbody>",
                esc(&t.source, 100),
                t.passed,
                t.total
            );
            for r in &t.results {
                let result = match r.status {
                    TestStatus::Passed => "passed",
                    TestStatus::Failed => "failed",
                    TestStatus::TimedOut => "timed out",
                    TestStatus::NotRun => "not run",
                };
                let _ = write!(
                    h,
                    "<tr><th scope=\"row\">{}</th><td>{result}</td><td class=\"num\">{:.1} s</td><td>{}</td></tr>",
                    esc(&r.name, 100),
                    r.duration_seconds,
                    r.error.as_deref().map_or(String::new(), |e| esc(e, 600))
                );
            }
            h.push_str("</tbody></table>");
        }
        h.push_str("</details>");
    }
    h.push_str("</main></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_only_plain_https_links() {
        assert_eq!(
            esc("<img src=x onerror='a()'> & \"q\"", 100),
            "&lt;img src=x onerror=&#39;a()&#39;&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(link("javascript:alert(1)", "x"), "javascript:alert(1)");
        assert_eq!(
            link("https://github.com/o/r/pull/3", "3"),
            "<a href=\"https://github.com/o/r/pull/3\">3</a>"
        );
        assert!(!link("https://e.com/\"><script>", "x").contains('<'));
    }

    #[test]
    fn a_run_over_pools_shows_each_pool_and_what_was_not_run_escaped() {
        let view = crate::output::tests::pools_view("<script>alert(1)</script>");
        let html = run_html(&view);
        assert!(
            html.contains("<dt>Pool cpu</dt><dd>1 of 1 passed, $0.00</dd>"),
            "{html}"
        );
        assert!(html.contains("<dt>Pool gpu-24</dt><dd>1 of 2 passed, $0.00</dd>"));
        assert!(html.contains("<dd>acme/huge: &lt;script&gt;alert(1)&lt;/script&gt;</dd>"));
        assert!(!html.contains("<script>"));
    }
}
