//! `janitorctl run --org ORG`: an organisation's repositories from GitHub's REST API, each one
//! with a Dockerfile where the pipeline looks for one becoming a job, written as a workers
//! config (a file of per-repository overrides, in the workers-config schema, still applies),
//! with the repositories skipped and why.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use janitor_model::ledger::{Discovery, SkippedRepo};
use janitor_model::runpod;
use janitor_model::yaml::{self, Node, Value};
use janitor_services::github::{GitHub, OrgRepo};

use crate::CtlError;

/// How many repositories' trees are read at once.
const TREE_CONCURRENCY: usize = 8;

/// What `--org` asks for.
#[derive(Debug, Clone, clap::Args)]
pub struct OrgArgs {
    /// Validate every repository of this GitHub organisation (FILE, if given, holds
    /// per-repository overrides in the workers-config schema)
    #[arg(long)]
    pub org: Option<String>,
    /// --org: only repositories whose name matches one of these globs (`worker-*`)
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// --org: leave out repositories whose name matches one of these globs
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// --org: also archived repositories
    #[arg(long)]
    pub include_archived: bool,
    /// --org: also forks
    #[arg(long)]
    pub include_forks: bool,
    /// --org: print the generated config and what was skipped, then stop
    #[arg(long)]
    pub dry_run: bool,
    /// GitHub's REST API
    #[arg(
        long,
        env = "JANITOR_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,
}

/// `*` any run of characters, `?` one character, anything else itself (case-sensitive, as
/// GitHub names are case-insensitive but written one way).
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with one backtrack point for the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The per-repository overrides: the file's top-level settings and its repository entries by
/// name.
pub struct Overrides {
    pub path: PathBuf,
    root: Option<Node>,
}

impl Overrides {
    pub fn none() -> Overrides {
        Overrides {
            path: PathBuf::new(),
            root: None,
        }
    }

    /// Reads the file (validated on its own first, so its errors name its lines).
    pub fn read(
        path: &Path,
        opts: &janitor_model::config::ParseOptions,
    ) -> Result<Overrides, CtlError> {
        crate::load_config(path, opts)?;
        let text = std::fs::read_to_string(path).map_err(|source| CtlError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let root = yaml::parse(&text).ok().flatten();
        Ok(Overrides {
            path: path.to_path_buf(),
            root,
        })
    }

    /// The file's repository entries.
    fn entries(&self) -> Vec<&Node> {
        let Some(root) = &self.root else {
            return Vec::new();
        };
        let list = match &root.value {
            Value::Seq(_) => Some(root),
            Value::Map(m) => m
                .iter()
                .find(|(k, _)| scalar(k) == Some("repositories"))
                .map(|(_, v)| v),
            Value::Scalar { .. } => None,
        };
        match list.map(|l| &l.value) {
            Some(Value::Seq(items)) => items.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The entry for `org/name`, if the file has one.
    fn entry(&self, org: &str, name: &str) -> Option<&Node> {
        self.entries().into_iter().find(|e| {
            let (o, n) = entry_name(e);
            n.is_some_and(|n| n.eq_ignore_ascii_case(name))
                && o.is_none_or(|o| o.eq_ignore_ascii_case(org))
        })
    }

    /// The names the file overrides, for those the organisation does not have.
    fn names(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter_map(|e| entry_name(e).1.map(str::to_string))
            .collect()
    }
}

fn scalar(n: &Node) -> Option<&str> {
    match &n.value {
        Value::Scalar { text, .. } => Some(text),
        _ => None,
    }
}

fn field<'n>(n: &'n Node, key: &str) -> Option<&'n Node> {
    match &n.value {
        Value::Map(m) => m
            .iter()
            .find(|(k, _)| scalar(k) == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// (organization, name) of an entry: `org/name` or a mapping.
fn entry_name(e: &Node) -> (Option<&str>, Option<&str>) {
    match &e.value {
        Value::Scalar { text, .. } => match text.split_once('/') {
            Some((o, n)) => (Some(o), Some(n)),
            None => (None, Some(text.as_str())),
        },
        Value::Map(_) => (
            field(e, "organization").and_then(scalar),
            field(e, "name").and_then(scalar),
        ),
        Value::Seq(_) => (None, None),
    }
}

/// One repository that becomes a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    /// The Dockerfile the pipeline will build.
    pub dockerfile: String,
    /// Which of the files routing reads (`pools::HINT_FILES`) the tree has.
    pub hint_files: Vec<String>,
}

/// What discovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    pub jobs: Vec<Found>,
    pub skipped: Vec<SkippedRepo>,
}

fn skip(name: &str, reason: impl Into<String>) -> SkippedRepo {
    SkippedRepo {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// Lists `org`'s repositories and keeps those with a Dockerfile where the pipeline looks:
/// the override's `dockerfile:`, else `.runpod/Dockerfile`, else `Dockerfile`.
pub async fn discover(
    gh: &GitHub,
    org: &str,
    args: &OrgArgs,
    overrides: &Overrides,
) -> Result<Discovered, CtlError> {
    let listed = gh.org_repos(org).await.map_err(|e| {
        CtlError::Usage(format!(
            "cannot list the repositories of {org}: {}",
            e.message
        ))
    })?;
    let mut out = Discovered::default();
    let mut candidates: Vec<(OrgRepo, Vec<String>)> = Vec::new();
    for r in listed {
        if r.archived && !args.include_archived {
            out.skipped.push(skip(
                &r.name,
                "archived (pass --include-archived to run it)",
            ));
        } else if r.fork && !args.include_forks {
            out.skipped
                .push(skip(&r.name, "a fork (pass --include-forks to run it)"));
        } else if let Some(p) = args.exclude.iter().find(|p| glob(p, &r.name)) {
            out.skipped
                .push(skip(&r.name, format!("excluded by --exclude '{p}'")));
        } else if !args.include.is_empty() && !args.include.iter().any(|p| glob(p, &r.name)) {
            out.skipped.push(skip(
                &r.name,
                format!("not matched by --include '{}'", args.include.join("', '")),
            ));
        } else {
            let wanted = match overrides
                .entry(org, &r.name)
                .and_then(|e| field(e, "dockerfile"))
                .and_then(scalar)
            {
                Some(d) => vec![d.to_string()],
                None => vec![runpod::HUB_DOCKERFILE.to_string(), "Dockerfile".to_string()],
            };
            candidates.push((r, wanted));
        }
    }
    let checked: Vec<Result<Result<Found, SkippedRepo>, CtlError>> =
        futures_util::stream::iter(candidates)
            .map(|(r, wanted)| async move {
                let tree = gh
                    .tree_paths(org, &r.name, &r.default_branch)
                    .await
                    .map_err(|e| {
                        CtlError::Usage(format!(
                            "cannot read the files of {org}/{}: {}",
                            r.name, e.message
                        ))
                    })?;
                let Some(paths) = tree else {
                    return Ok(Err(skip(&r.name, "an empty repository")));
                };
                Ok(
                    match wanted.iter().find(|w| paths.iter().any(|p| p == *w)) {
                        Some(d) => Ok(Found {
                            name: r.name.clone(),
                            dockerfile: d.clone(),
                            hint_files: paths
                                .iter()
                                .filter(|p| crate::pools::HINT_FILES.contains(&p.as_str()))
                                .cloned()
                                .collect(),
                        }),
                        None => Err(skip(
                            &r.name,
                            format!(
                                "no Dockerfile at {} on {}",
                                wanted.join(" or "),
                                r.default_branch
                            ),
                        )),
                    },
                )
            })
            .buffer_unordered(TREE_CONCURRENCY)
            .collect()
            .await;
    for c in checked {
        match c? {
            Ok(found) => out.jobs.push(found),
            Err(skipped) => out.skipped.push(skipped),
        }
    }
    out.jobs.sort_by(|a, b| a.name.cmp(&b.name));
    out.skipped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A scalar as YAML: plain as written, anything else double-quoted (JSON's escapes are YAML's).
fn yaml_scalar(text: &str, plain: bool) -> String {
    if plain && !text.is_empty() {
        text.to_string()
    } else {
        serde_json::Value::String(text.to_string()).to_string()
    }
}

fn emit(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match &node.value {
        Value::Scalar { text, plain } => {
            out.push_str(&format!("{pad}{}\n", yaml_scalar(text, *plain)));
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                let key = match &k.value {
                    Value::Scalar { text, plain } => yaml_scalar(text, *plain),
                    _ => continue,
                };
                match &v.value {
                    Value::Scalar { text, plain } => {
                        out.push_str(&format!("{pad}{key}: {}\n", yaml_scalar(text, *plain)));
                    }
                    Value::Seq(items) if items.is_empty() => {
                        out.push_str(&format!("{pad}{key}: []\n"));
                    }
                    Value::Map(m) if m.is_empty() => out.push_str(&format!("{pad}{key}: {{}}\n")),
                    _ => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        emit(v, indent + 2, out);
                    }
                }
            }
        }
        Value::Seq(items) => {
            for item in items {
                match &item.value {
                    Value::Scalar { text, plain } => {
                        out.push_str(&format!("{pad}- {}\n", yaml_scalar(text, *plain)));
                    }
                    _ => {
                        // The item at two more spaces, its first line starting with `- `.
                        let mut inner = String::new();
                        emit(item, indent + 2, &mut inner);
                        if let Some(rest) = inner.strip_prefix(&format!("{pad}  ")) {
                            out.push_str(&format!("{pad}- {rest}"));
                        } else {
                            out.push_str(&format!("{pad}-\n{inner}"));
                        }
                    }
                }
            }
        }
    }
}

/// The workers config of a discovery: the override file's settings, then one entry per job
/// (the override's own entry where it has one), then the skipped repositories as comments.
pub fn config_text(org: &str, d: &Discovered, overrides: &Overrides, when: &str) -> String {
    let mut out = format!(
        "# janitorctl run --org {org} ({when}): {} repositories with a Dockerfile, {} skipped (listed at the end)\n",
        d.jobs.len(),
        d.skipped.len()
    );
    if let Some(Node {
        value: Value::Map(top),
        ..
    }) = &overrides.root
    {
        out.push_str(&format!(
            "# settings and overrides from {}\n",
            overrides.path.display()
        ));
        for (k, v) in top {
            if scalar(k) == Some("repositories") {
                continue;
            }
            let one = Node {
                line: k.line,
                value: Value::Map(vec![(k.clone(), v.clone())]),
            };
            emit(&one, 0, &mut out);
        }
    }
    out.push_str("repositories:\n");
    for job in &d.jobs {
        match overrides.entry(org, &job.name) {
            Some(
                e @ Node {
                    value: Value::Map(_),
                    ..
                },
            ) => {
                let seq = Node {
                    line: e.line,
                    value: Value::Seq(vec![e.clone()]),
                };
                emit(&seq, 2, &mut out);
            }
            _ => out.push_str(&format!(
                "  - organization: {}\n    name: {}\n",
                yaml_scalar(org, true),
                yaml_scalar(&job.name, true)
            )),
        }
    }
    let known: Vec<&str> = d
        .jobs
        .iter()
        .map(|j| j.name.as_str())
        .chain(d.skipped.iter().map(|s| s.name.as_str()))
        .collect();
    for name in overrides.names() {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(&name)) {
            out.push_str(&format!(
                "# override for {name} not used: {org} has no such repository\n"
            ));
        }
    }
    for s in &d.skipped {
        out.push_str(&format!("# skipped {}: {}\n", s.name, s.reason));
    }
    out
}

/// The manifest's record of the discovery.
pub fn record(org: &str, d: &Discovered, overrides: &Overrides) -> Discovery {
    Discovery {
        organization: org.to_string(),
        discovered: d.jobs.iter().map(|j| j.name.clone()).collect(),
        skipped: d.skipped.clone(),
        overrides: (!overrides.path.as_os_str().is_empty())
            .then(|| overrides.path.display().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("worker-*", "worker-vllm"));
        assert!(glob("*-whisper", "worker-faster-whisper"));
        assert!(glob("worker-?llm", "worker-vllm"));
        assert!(glob("*", ""));
        assert!(!glob("worker-*", "runpod-python"));
        assert!(!glob("w?", "w"));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn the_config_keeps_overrides_and_says_what_was_skipped() {
        let text = "max_concurrent_instances: 3\nmodel: claude-sonnet-4-5\nrepositories:\n  - organization: runpod-workers\n    name: worker-vllm\n    timeout_minutes: 90\n    expected_errors: [\"ERROR: cuda warmup\"]\n    env:\n      MODEL_NAME: \"facebook/opt-125m\"\n  - runpod-workers/worker-gone\n";
        let overrides = Overrides {
            path: PathBuf::from("overrides.yaml"),
            root: yaml::parse(text).unwrap(),
        };
        let d = Discovered {
            jobs: vec![
                Found {
                    name: "worker-basic".into(),
                    dockerfile: "Dockerfile".into(),
                    hint_files: Vec::new(),
                },
                Found {
                    name: "worker-vllm".into(),
                    dockerfile: "Dockerfile".into(),
                    hint_files: Vec::new(),
                },
            ],
            skipped: vec![skip(
                "old-worker",
                "archived (pass --include-archived to run it)",
            )],
        };
        let out = config_text("runpod-workers", &d, &overrides, "2026-12-03T23:00:00Z");
        assert_eq!(
            out,
            "# janitorctl run --org runpod-workers (2026-12-03T23:00:00Z): 2 repositories with a Dockerfile, 1 skipped (listed at the end)\n\
             # settings and overrides from overrides.yaml\n\
             max_concurrent_instances: 3\n\
             model: claude-sonnet-4-5\n\
             repositories:\n\
             \x20 - organization: runpod-workers\n\
             \x20   name: worker-basic\n\
             \x20 - organization: runpod-workers\n\
             \x20   name: worker-vllm\n\
             \x20   timeout_minutes: 90\n\
             \x20   expected_errors:\n\
             \x20     - \"ERROR: cuda warmup\"\n\
             \x20   env:\n\
             \x20     MODEL_NAME: \"facebook/opt-125m\"\n\
             # override for worker-gone not used: runpod-workers has no such repository\n\
             # skipped old-worker: archived (pass --include-archived to run it)\n"
        );
        // What it writes is a config the parser takes.
        let cfg = janitor_model::config::parse(
            Path::new("generated.yaml"),
            &out,
            &janitor_model::config::ParseOptions::default(),
        )
        .unwrap();
        assert_eq!(cfg.repositories.len(), 2);
        assert_eq!(cfg.max_concurrent_instances, 3);
        assert_eq!(cfg.repositories[1].timeout.as_secs(), 90 * 60);
    }
}
