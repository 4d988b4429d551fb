//! Test discovery: which Dockerfile is built, where the worker's tests come from (the config's
//! `tests:`, `tests_file:`, `.runpod/tests.json`, `.github/tests.json`, `test_input.json`, then
//! `smoke_command`, then the image's CMD), and the environment the worker starts with.

use std::path::Path;

use janitor_model::config::JobSpec;
use janitor_model::runpod::{self, Hub, HubEnv, TestCase, TestGroup, TestsConfig};

/// How the worker is validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Served over HTTP, each test through `/runsync`.
    Server { tests: Vec<TestCase> },
    /// The smoke command, or the image's CMD, run to its exit.
    RunToExit,
}

/// What a repository says about how it is built and tested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub dockerfile: String,
    /// `config`, a tests file's path, `test_input.json`, `smoke_command` or `cmd`.
    pub source: String,
    pub plan: Plan,
    /// `KEY=value`, in the order the engine is given them.
    pub env: Vec<String>,
    /// Required variables nobody gives a value, with who requires them.
    pub missing_env: Vec<String>,
    /// The CUDA versions the tests or the hub allow; the lowest is what the worker needs.
    pub allowed_cuda: Vec<String>,
    /// The largest `containerDiskInGb` (hub.json's or a runner template's), and its file.
    pub container_disk_gb: Option<u64>,
    pub container_disk_from: String,
    /// The GPUs the tests are meant for (tests.json `gpuTypeId`/`gpuIds`, else hub.json
    /// `gpuIds`), with the file that says so.
    pub gpu_ids: (Vec<String>, String),
    /// tests.json `config.gpuCount`.
    pub gpu_count: Option<u64>,
    /// Things a maintainer should know (a likely unit mistake in a timeout).
    pub notes: Vec<String>,
    /// `.github/tests.json`'s groups, each run in its own container; empty: one container
    /// with the image's command for every test.
    pub groups: Vec<TestGroup>,
}

fn read(repo: &Path, rel: &str) -> Result<Option<String>, String> {
    let path = repo.join(rel);
    // A link anywhere on the way may point out of the checkout, at a host file.
    if let (Ok(real), Ok(root)) = (std::fs::canonicalize(&path), std::fs::canonicalize(repo)) {
        if !real.starts_with(&root) {
            return Err(format!(
                "{rel} is a link out of the repository; a tests file must be in the repository"
            ));
        }
    }
    let meta = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Err(format!("{rel} is not a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {rel}: {e}")),
    };
    if meta.len() > runpod::MAX_FILE_BYTES {
        return Err(format!(
            "{rel} is {} bytes, over the {}-byte limit for a tests file",
            meta.len(),
            runpod::MAX_FILE_BYTES
        ));
    }
    std::fs::read_to_string(&path)
        .map(Some)
        .map_err(|e| format!("cannot read {rel}: {e}"))
}

/// Reads what the checkout in `repo` says. `Err` is the repository's own mistake (a tests file
/// that does not parse, a `tests_file` that is not there), naming the file and field.
pub fn discover(repo: &Path, spec: &JobSpec) -> Result<Discovered, String> {
    let dockerfile = match &spec.dockerfile {
        Some(d) => d.clone(),
        None if repo.join(runpod::HUB_DOCKERFILE).is_file() => runpod::HUB_DOCKERFILE.to_string(),
        None => "Dockerfile".to_string(),
    };
    let hub = match read(repo, runpod::HUB_FILE)? {
        Some(text) => Some(runpod::parse_hub(runpod::HUB_FILE, &text)?),
        None => None,
    };
    let mut config = TestsConfig::default();
    let mut groups = Vec::new();
    let (source, plan) = if !spec.tests.is_empty() {
        (
            "config".to_string(),
            Plan::Server {
                tests: spec.tests.clone(),
            },
        )
    } else if let Some(file) = &spec.tests_file {
        let text = read(repo, file)?
            .ok_or_else(|| format!("tests_file `{file}` is not in the repository"))?;
        let parsed = runpod::parse_tests(file, &text)?;
        config = parsed.config;
        (
            file.clone(),
            Plan::Server {
                tests: parsed.tests,
            },
        )
    } else if let Some((file, parsed)) = first_tests_file(repo)? {
        config = parsed.config;
        groups = parsed.groups;
        (
            file.to_string(),
            Plan::Server {
                tests: parsed.tests,
            },
        )
    } else if let Some(text) = read(repo, runpod::TEST_INPUT)? {
        let test = runpod::parse_test_input(runpod::TEST_INPUT, &text)?;
        (
            runpod::TEST_INPUT.to_string(),
            Plan::Server { tests: vec![test] },
        )
    } else if spec.smoke_command.is_some() {
        ("smoke_command".to_string(), Plan::RunToExit)
    } else {
        ("cmd".to_string(), Plan::RunToExit)
    };
    let mut notes: Vec<String> = match &plan {
        Plan::Server { tests } => tests
            .iter()
            .filter_map(|t| {
                t.timeout_problem()
                    .map(|p| format!("{source}: test `{}`: {p}", t.name))
            })
            .collect(),
        Plan::RunToExit => Vec::new(),
    };
    if let Some((seconds, from)) = &config.runner_timeout {
        notes.push(match from {
            Some(at) => format!(
                "{source}: each request's timeout is {seconds} s, the `request-timeout` of runpod-test-runner at {at}; `expectedOutput` is compared and reported, never failed, as the runner does"
            ),
            None => format!(
                "{source}: each request's timeout is the test runner's default {seconds} s (no workflow sets `request-timeout`); `expectedOutput` is compared and reported, never failed, as the runner does"
            ),
        });
    }
    notes.extend(groups.iter().filter_map(|g| g.note.clone()));
    let (env, missing_env) = environment(spec, &source, &config, hub.as_ref());
    let mut allowed_cuda = config.allowed_cuda_versions.clone();
    if allowed_cuda.is_empty() {
        allowed_cuda = hub
            .as_ref()
            .map(|h| h.allowed_cuda_versions.clone())
            .unwrap_or_default();
    }
    let gpu_ids = if config.gpu_ids.is_empty() {
        (
            hub.as_ref().map(|h| h.gpu_ids.clone()).unwrap_or_default(),
            runpod::HUB_FILE.to_string(),
        )
    } else {
        (config.gpu_ids.clone(), source.clone())
    };
    // The largest disk any of the worker's templates asks for.
    let hub_disk = hub.as_ref().and_then(|h| h.container_disk_gb);
    let group_disk = groups.iter().filter_map(|g| g.container_disk_gb).max();
    let (container_disk_gb, container_disk_from) = match (hub_disk, group_disk) {
        (h, Some(g)) if h.is_none_or(|h| g > h) => (Some(g), source.clone()),
        (h, _) => (h, runpod::HUB_FILE.to_string()),
    };
    Ok(Discovered {
        dockerfile,
        source,
        plan,
        env,
        missing_env,
        allowed_cuda,
        container_disk_gb,
        container_disk_from,
        gpu_ids,
        gpu_count: config.gpu_count,
        notes,
        groups,
    })
}

fn first_tests_file(repo: &Path) -> Result<Option<(&'static str, runpod::TestsFile)>, String> {
    if let Some(text) = read(repo, runpod::HUB_TESTS)? {
        return Ok(Some((
            runpod::HUB_TESTS,
            runpod::parse_tests(runpod::HUB_TESTS, &text)?,
        )));
    }
    if let Some(text) = read(repo, runpod::RUNNER_TESTS)? {
        let mut parsed = runpod::parse_runner_tests(runpod::RUNNER_TESTS, &text)?;
        // The runner's per-request timeout: the workflow's `request-timeout`, else its default.
        let (seconds, from) = runpod::runner_request_timeout(&workflows(repo))
            .map_or((runpod::RUNNER_DEFAULT_TIMEOUT_SECONDS, None), |(s, at)| {
                (s, Some(at))
            });
        for t in &mut parsed.tests {
            t.timeout_ms.get_or_insert(seconds * 1000);
        }
        parsed.config.runner_timeout = Some((seconds, from));
        return Ok(Some((runpod::RUNNER_TESTS, parsed)));
    }
    Ok(None)
}

/// The repository's workflow files (`.github/workflows/*.yml`, `*.yaml`), each bounded like a
/// tests file; links out of the checkout are skipped.
fn workflows(repo: &Path) -> Vec<(String, String)> {
    let dir = ".github/workflows";
    let Ok(entries) = std::fs::read_dir(repo.join(dir)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| {
            let rel = format!("{dir}/{n}");
            read(repo, &rel).ok().flatten().map(|text| (rel, text))
        })
        .take(50)
        .collect()
}

/// The worker's environment, highest first: the config's `env:`, the tests file's
/// `config.env`, the hub's first preset, the hub's fixed values, the hub's input defaults.
/// A hub input marked required that none of these gives is missing.
fn environment(
    spec: &JobSpec,
    source: &str,
    config: &TestsConfig,
    hub: Option<&Hub>,
) -> (Vec<String>, Vec<String>) {
    let mut chosen: Vec<(String, String)> = Vec::new();
    let mut give = |k: &str, v: &str| {
        if !chosen.iter().any(|(seen, _)| seen == k) {
            chosen.push((k.to_string(), v.to_string()));
        }
    };
    for (k, v) in &spec.env {
        give(k, v);
    }
    for (k, v) in &config.env {
        give(k, v);
    }
    let mut missing = Vec::new();
    if let Some(hub) = hub {
        if let Some((_, defaults)) = &hub.preset {
            for (k, v) in defaults {
                give(k, v);
            }
        }
        for (k, e) in &hub.env {
            match e {
                HubEnv::Fixed(v) => give(k, v),
                HubEnv::Input {
                    default: Some(v), ..
                } => give(k, v),
                HubEnv::Input { default: None, .. } => {}
            }
        }
        for (k, e) in &hub.env {
            if matches!(
                e,
                HubEnv::Input {
                    default: None,
                    required: true
                }
            ) && !chosen.iter().any(|(seen, _)| seen == k)
            {
                missing.push(format!(
                    "{k} (required by {}; give it in the repository's `env:` in the workers config{})",
                    runpod::HUB_FILE,
                    if source.ends_with("tests.json") { format!(" or in {source} config.env") } else { String::new() }
                ));
            }
        }
    }
    (
        chosen
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        missing,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use janitor_model::config::RepoRef;
    use std::time::Duration;

    fn spec() -> JobSpec {
        JobSpec::new(
            RepoRef {
                organization: "o".into(),
                name: "n".into(),
                url: None,
                git_ref: None,
            },
            Duration::from_secs(60),
        )
    }

    fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    const HUB_TESTS: &str = r#"{"tests": [{"name": "a", "input": {"x": 1}}], "config": {"env": [{"key": "FROM_TESTS", "value": "t"}]}}"#;

    /// A repository's tests file that is a link to a host file (directly, or through a linked
    /// directory) is refused, never read.
    #[test]
    fn a_tests_file_linked_out_of_the_checkout_is_refused() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("tests.json"), HUB_TESTS).unwrap();
        let r = repo(&[("Dockerfile", "FROM x\n")]);
        std::fs::create_dir_all(r.path().join(".runpod")).unwrap();
        std::os::unix::fs::symlink(
            host.path().join("tests.json"),
            r.path().join(".runpod/tests.json"),
        )
        .unwrap();
        let e = discover(r.path(), &spec()).unwrap_err();
        assert!(
            e.contains(".runpod/tests.json is a link out of the repository"),
            "{e}"
        );
        std::fs::remove_file(r.path().join(".runpod/tests.json")).unwrap();
        std::fs::remove_dir(r.path().join(".runpod")).unwrap();
        std::os::unix::fs::symlink(host.path(), r.path().join(".runpod")).unwrap();
        assert!(
            discover(r.path(), &spec()).is_err(),
            "through a linked directory too"
        );
    }

    #[test]
    fn the_order_of_sources() {
        let all = repo(&[
            (".runpod/tests.json", HUB_TESTS),
            (".github/tests.json", r#"[{"input": {}}]"#),
            ("test_input.json", r#"{"input": {}}"#),
            (".runpod/Dockerfile", "FROM x"),
            ("Dockerfile", "FROM y"),
        ]);
        let d = discover(all.path(), &spec()).unwrap();
        assert_eq!(
            (d.source.as_str(), d.dockerfile.as_str()),
            (".runpod/tests.json", ".runpod/Dockerfile")
        );
        std::fs::remove_file(all.path().join(".runpod/tests.json")).unwrap();
        assert_eq!(
            discover(all.path(), &spec()).unwrap().source,
            ".github/tests.json"
        );
        std::fs::remove_file(all.path().join(".github/tests.json")).unwrap();
        let d = discover(all.path(), &spec()).unwrap();
        assert_eq!(d.source, "test_input.json");
        assert!(matches!(&d.plan, Plan::Server { tests } if tests[0].name == "test_input"));
        std::fs::remove_file(all.path().join("test_input.json")).unwrap();
        let mut s = spec();
        assert_eq!(discover(all.path(), &s).unwrap().source, "cmd");
        s.smoke_command = Some(vec!["true".into()]);
        assert_eq!(discover(all.path(), &s).unwrap().plan, Plan::RunToExit);
        assert_eq!(discover(all.path(), &s).unwrap().source, "smoke_command");
        s.dockerfile = Some("Dockerfile".into());
        assert_eq!(discover(all.path(), &s).unwrap().dockerfile, "Dockerfile");
        // The config's own tests come first of all.
        s.tests = vec![TestCase {
            name: "c".into(),
            input: serde_json::json!({}),
            timeout_ms: None,
            expected_output: None,
            expectation_advisory: false,
        }];
        assert_eq!(discover(all.path(), &s).unwrap().source, "config");
    }

    #[test]
    fn a_repository_mistake_names_the_file() {
        let bad = repo(&[(".runpod/tests.json", r#"{"tests": [{"name": "a"}]}"#)]);
        let e = discover(bad.path(), &spec()).unwrap_err();
        assert!(
            e.starts_with(".runpod/tests.json: tests[0].input: missing"),
            "{e}"
        );
        let mut s = spec();
        s.tests_file = Some("ci/tests.json".into());
        let e = discover(bad.path(), &s).unwrap_err();
        assert_eq!(e, "tests_file `ci/tests.json` is not in the repository");
        let slow = repo(&[(
            ".runpod/tests.json",
            r#"{"tests": [{"name": "a", "input": {}, "timeout": 30}]}"#,
        )]);
        let d = discover(slow.path(), &spec()).unwrap();
        assert!(
            d.notes[0].contains("test `a`: timeout 30 is in milliseconds"),
            "{:?}",
            d.notes
        );
    }

    #[test]
    fn environment_precedence_and_required_inputs() {
        let hub = r#"{"config": {"containerDiskInGb": 20, "allowedCudaVersions": ["12.1", "12.4"],
            "presets": [{"name": "p", "defaults": {"PRESET": "p", "FROM_TESTS": "preset-loses"}}],
            "env": [{"key": "MODEL_NAME", "input": {"required": true}},
                    {"key": "MODE", "input": {"default": "auto"}},
                    {"key": "FIXED", "value": "f"}]}}"#;
        let r = repo(&[(".runpod/tests.json", HUB_TESTS), (".runpod/hub.json", hub)]);
        let mut s = spec();
        s.env = vec![("MODE".into(), "slow".into())];
        let d = discover(r.path(), &s).unwrap();
        assert_eq!(d.env, ["MODE=slow", "FROM_TESTS=t", "PRESET=p", "FIXED=f"]);
        assert_eq!(d.missing_env.len(), 1);
        assert!(
            d.missing_env[0].starts_with("MODEL_NAME (required by .runpod/hub.json"),
            "{:?}",
            d.missing_env
        );
        assert_eq!(d.container_disk_gb, Some(20));
        assert_eq!(d.allowed_cuda, ["12.1", "12.4"]);
        s.env.push(("MODEL_NAME".into(), "m".into()));
        assert!(discover(r.path(), &s).unwrap().missing_env.is_empty());
    }
}
