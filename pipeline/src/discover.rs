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

/// A repository file through the one door (no link out, regular files only, bounded).
fn read(repo: &Path, rel: &str) -> Result<Option<String>, String> {
    crate::files::read_text(repo, rel, runpod::MAX_FILE_BYTES).map_err(|e| e.to_string())
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

/// The discovery of a changed checkout, with the tests as they were before the change: every
/// test of `before` (a removed or shadowed one restored, a changed one as it was), then the
/// tests the change added. Each keeps the worker template it ran in (the runner's command,
/// environment and GPUs): `before`'s for its tests, the change's for the added ones, the
/// image's own command for tests that had none. The rest (the Dockerfile, the environment,
/// the hub's settings) is the changed checkout's. Returns what the change did to the tests,
/// one phrase each, empty when they are as they were. Pure.
pub fn keep_tests(before: &Discovered, mut after: Discovered) -> (Discovered, Vec<String>) {
    let was: &[TestCase] = match &before.plan {
        Plan::Server { tests } => tests,
        Plan::RunToExit => &[],
    };
    let now: Vec<TestCase> = match &after.plan {
        Plan::Server { tests } => tests.clone(),
        Plan::RunToExit => Vec::new(),
    };
    let mut changes = Vec::new();
    for t in was {
        match now.iter().find(|n| n.name == t.name) {
            None => changes.push(format!("removed test `{}`", t.name)),
            Some(n) if n != t => changes.push(format!("changed test `{}`", t.name)),
            Some(_) => {}
        }
    }
    // The change's tests that were not there before, with their index in the change's file.
    let added: Vec<(usize, &TestCase)> = now
        .iter()
        .enumerate()
        .filter(|(_, n)| !was.iter().any(|t| t.name == n.name))
        .collect();
    changes.extend(
        added
            .iter()
            .map(|(_, t)| format!("added test `{}`", t.name)),
    );
    if was.is_empty() {
        // No tests before (or none readable): the change's own are all there is.
        return (after, changes);
    }
    let template = |g: &TestGroup| {
        (
            g.label.clone(),
            g.command.clone(),
            g.env.clone(),
            g.gpu_ids.clone(),
            g.gpu_count,
        )
    };
    if before.source == after.source
        && before
            .groups
            .iter()
            .map(template)
            .ne(after.groups.iter().map(template))
    {
        changes.push(format!("changed the worker templates of {}", before.source));
    }
    if before.source != after.source {
        changes.push(format!(
            "moved the tests from {} to {}",
            before.source, after.source
        ));
    }
    if changes.is_empty() {
        return (after, changes);
    }
    let mut groups = before.groups.clone();
    let grouped = !before.groups.is_empty() || !after.groups.is_empty();
    if grouped && before.groups.is_empty() {
        groups.push(TestGroup::image_command(
            "as before the change",
            (0..was.len()).collect(),
        ));
    }
    // Where each added test is in the kept list.
    let kept_index = |i: usize| {
        added
            .iter()
            .position(|(at, _)| *at == i)
            .map(|p| was.len() + p)
    };
    let mut placed = vec![false; added.len()];
    for g in &after.groups {
        let tests: Vec<usize> = g.tests.iter().filter_map(|i| kept_index(*i)).collect();
        if tests.is_empty() {
            continue;
        }
        for t in &tests {
            placed[t - was.len()] = true;
        }
        groups.push(TestGroup { tests, ..g.clone() });
    }
    let loose: Vec<usize> = (0..added.len())
        .filter(|p| !placed[*p])
        .map(|p| was.len() + p)
        .collect();
    if grouped && !loose.is_empty() {
        groups.push(TestGroup::image_command("added by the change", loose));
    }
    let mut tests = was.to_vec();
    tests.extend(added.iter().map(|(_, t)| (*t).clone()));
    after.plan = Plan::Server { tests };
    after.groups = groups;
    if now.is_empty() {
        after.source = before.source.clone();
    }
    after.notes.push(format!(
        "the agent's change {}: judged by the tests as they were before it ({}){}",
        changes.join(", "),
        before.source,
        if added.is_empty() {
            ""
        } else {
            ", and the ones it added"
        }
    ));
    (after, changes)
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

    fn case(name: &str, input: i64) -> TestCase {
        TestCase {
            name: name.into(),
            input: serde_json::json!({ "n": input }),
            timeout_ms: None,
            expected_output: Some(serde_json::json!({ "n": input })),
            expectation_advisory: false,
        }
    }

    fn found(source: &str, tests: Vec<TestCase>) -> Discovered {
        let r = repo(&[]);
        let mut d = discover(r.path(), &spec()).unwrap();
        d.source = source.into();
        d.plan = if tests.is_empty() {
            Plan::RunToExit
        } else {
            Plan::Server { tests }
        };
        d
    }

    fn names(d: &Discovered) -> Vec<String> {
        match &d.plan {
            Plan::Server { tests } => tests.iter().map(|t| t.name.clone()).collect(),
            Plan::RunToExit => Vec::new(),
        }
    }

    /// A change that deletes, weakens or moves the failing test is judged by it as it was; a
    /// test it adds runs too; with no tests before, the change's own are all there is.
    #[test]
    fn the_tests_as_they_were_judge_the_change() {
        let before = found(".runpod/tests.json", vec![case("a", 1), case("slow", 2)]);
        let check = |after: Discovered, want: &[&str], changes: &[&str]| {
            let (kept, said) = keep_tests(&before, after);
            assert_eq!(names(&kept), want);
            assert_eq!(said, changes);
            kept
        };
        let same = check(
            found(".runpod/tests.json", vec![case("a", 1), case("slow", 2)]),
            &["a", "slow"],
            &[],
        );
        assert!(same.notes.is_empty());
        let kept = check(
            found(".runpod/tests.json", vec![case("a", 1)]),
            &["a", "slow"],
            &["removed test `slow`"],
        );
        assert!(matches!(&kept.plan, Plan::Server { tests } if tests[1] == case("slow", 2)));
        assert!(
            kept.notes[0].contains("judged by the tests as they were before it"),
            "{:?}",
            kept.notes
        );
        let kept = check(
            found(
                ".runpod/tests.json",
                vec![case("a", 1), case("slow", 99), case("new", 3)],
            ),
            &["a", "slow", "new"],
            &["changed test `slow`", "added test `new`"],
        );
        assert!(matches!(&kept.plan, Plan::Server { tests } if tests[1] == case("slow", 2)));
        // Every tests file deleted: the worker's CMD would have run; the tests still do.
        check(
            found("cmd", vec![]),
            &["a", "slow"],
            &[
                "removed test `a`",
                "removed test `slow`",
                "moved the tests from .runpod/tests.json to cmd",
            ],
        );
        // A new file that shadows the old one (tests.json over test_input.json) runs beside
        // the old tests, under its own name.
        let old = found("test_input.json", vec![case("test_input", 1)]);
        let (kept, said) = keep_tests(&old, found(".runpod/tests.json", vec![case("greets", 2)]));
        assert_eq!(names(&kept), ["test_input", "greets"]);
        assert_eq!(kept.source, ".runpod/tests.json");
        assert_eq!(
            said,
            [
                "removed test `test_input`",
                "added test `greets`",
                "moved the tests from test_input.json to .runpod/tests.json"
            ]
        );
        assert!(kept.groups.is_empty(), "one worker for all, as both had");
        // No tests before: the change's are used as they are.
        let (kept, said) = keep_tests(
            &found("cmd", vec![]),
            found("test_input.json", vec![case("t", 1)]),
        );
        assert_eq!(
            (names(&kept), said),
            (vec!["t".to_string()], vec!["added test `t`".to_string()])
        );
    }

    fn group(label: &str, command: &str, tests: Vec<usize>) -> TestGroup {
        TestGroup {
            command: Some(vec![command.into()]),
            ..TestGroup::image_command(label, tests)
        }
    }

    /// Each test runs in the template it had: the old ones in theirs, the added ones in the
    /// change's, the ones without a template with the image's own command.
    #[test]
    fn kept_tests_keep_their_worker_templates() {
        let mut before = found(".github/tests.json", vec![case("a", 1), case("b", 2)]);
        before.groups = vec![
            group("t1", "serve-a", vec![0]),
            group("t2", "serve-b", vec![1]),
        ];
        // The change drops `b`, edits t1's command and adds `c` to a new template t3.
        let mut after = found(".github/tests.json", vec![case("a", 1), case("c", 3)]);
        after.groups = vec![
            group("t1", "fake", vec![0]),
            group("t3", "serve-c", vec![1]),
        ];
        let (kept, said) = keep_tests(&before, after);
        assert_eq!(names(&kept), ["a", "b", "c"]);
        let runs: Vec<(Option<Vec<String>>, Vec<usize>)> = kept
            .groups
            .iter()
            .map(|g| (g.command.clone(), g.tests.clone()))
            .collect();
        let cmd = |c: &str| Some(vec![c.to_string()]);
        assert_eq!(
            runs,
            [
                (cmd("serve-a"), vec![0]),
                (cmd("serve-b"), vec![1]),
                (cmd("serve-c"), vec![2])
            ]
        );
        assert_eq!(
            said,
            [
                "removed test `b`",
                "added test `c`",
                "changed the worker templates of .github/tests.json"
            ]
        );
        // From one worker for all to templates: the old tests keep the image's command.
        let plain = found("test_input.json", vec![case("test_input", 1)]);
        let mut runner = found(".github/tests.json", vec![case("x", 9)]);
        runner.groups = vec![group("t", "serve-x", vec![0])];
        let (kept, _) = keep_tests(&plain, runner);
        let runs: Vec<(Option<Vec<String>>, Vec<usize>)> = kept
            .groups
            .iter()
            .map(|g| (g.command.clone(), g.tests.clone()))
            .collect();
        assert_eq!(runs, [(None, vec![0]), (cmd("serve-x"), vec![1])]);
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
