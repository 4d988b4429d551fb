//! The runpod workers' own test definitions, parsed with errors that name the file and field:
//! `.runpod/tests.json` (RunPod Hub), `.github/tests.json` (runpod-test-runner),
//! `test_input.json` (the SDK's local mode) and `.runpod/hub.json`; and the rule that says
//! whether one `/runsync` answer passes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The Hub's tests file, then the test runner's, then the SDK's single input.
pub const HUB_TESTS: &str = ".runpod/tests.json";
pub const RUNNER_TESTS: &str = ".github/tests.json";
pub const TEST_INPUT: &str = "test_input.json";
pub const HUB_FILE: &str = ".runpod/hub.json";
/// The Hub builds `.runpod/Dockerfile` before the repository's root `Dockerfile`.
pub const HUB_DOCKERFILE: &str = ".runpod/Dockerfile";
/// The largest tests or hub file read (a test input can carry a small base64 image).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// A test with no `timeout` gets this long (the test runner's default request timeout).
pub const DEFAULT_TEST_TIMEOUT_MS: u64 = 300_000;

/// One test: a job input sent to `/runsync`, with its own timeout and optional expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    pub input: Value,
    /// Milliseconds, as in the Hub's tests.json.
    #[serde(default, rename = "timeout", skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<Value>,
    /// Whether `expected_output` is compared and reported rather than failing the test, as
    /// runpod's test runner treats `.github/tests.json`'s `expectedOutput`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expectation_advisory: bool,
}

impl TestCase {
    /// A timeout under a second is almost certainly seconds written where milliseconds are
    /// meant (`"timeout": 30`): said, not silently reinterpreted.
    pub fn timeout_problem(&self) -> Option<String> {
        match self.timeout_ms {
            Some(ms) if ms < 1000 => Some(format!(
                "timeout {ms} is in milliseconds (under a second); tests.json timeouts are milliseconds: did you mean {}?",
                ms.saturating_mul(1000)
            )),
            _ => None,
        }
    }
}

/// What a tests file says besides its tests (the Hub's `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestsConfig {
    pub gpu_count: Option<u64>,
    pub allowed_cuda_versions: Vec<String>,
    /// `config.env`: fixed values the worker is started with.
    pub env: Vec<(String, String)>,
    /// `.github/tests.json` only: the runner's per-request timeout in seconds, and the
    /// workflow `file:line` that set it (`None`: the runner's default).
    pub runner_timeout: Option<(u64, Option<String>)>,
    /// `config.gpuTypeId` / `config.gpuIds`: the GPUs the tests are meant for.
    pub gpu_ids: Vec<String>,
}

/// A parsed tests file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestsFile {
    pub tests: Vec<TestCase>,
    pub config: TestsConfig,
    /// `.github/tests.json` only: the tests grouped by `hardwareConfig`, as the runner makes
    /// one template and endpoint per group. Empty: every test runs in one worker started with
    /// the image's own command.
    pub groups: Vec<TestGroup>,
}

/// Tests that run against one worker container, started as the group's template says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestGroup {
    /// The template's `name`, else the first test's endpoint name, else `group N`.
    pub label: String,
    /// `templateConfig.dockerArgs` split into words: the container's command in place of the
    /// image's CMD (its ENTRYPOINT kept). `None`: the image's own CMD.
    pub command: Option<Vec<String>>,
    /// Where the command comes from, for the report (`.github/tests.json [0]…dockerArgs`).
    pub command_from: Option<String>,
    /// `templateConfig.env`, over the worker's environment.
    pub env: Vec<(String, String)>,
    pub env_from: Option<String>,
    /// `endpointConfig.gpuIds` (the runner's default `AMPERE_16` when an endpoint is made
    /// without one) and `gpuCount`.
    pub gpu_ids: Vec<String>,
    pub gpu_count: Option<u64>,
    /// `templateConfig.containerDiskInGb`.
    pub container_disk_gb: Option<u64>,
    /// What a maintainer should know about how the group ran here.
    pub note: Option<String>,
    /// Indexes into the file's tests.
    pub tests: Vec<usize>,
}

impl TestGroup {
    /// A group run with the image's own command and the job's environment (no template).
    pub fn image_command(label: &str, tests: Vec<usize>) -> TestGroup {
        TestGroup {
            label: label.to_string(),
            command: None,
            command_from: None,
            env: Vec::new(),
            env_from: None,
            gpu_ids: Vec::new(),
            gpu_count: None,
            container_disk_gb: None,
            note: None,
            tests,
        }
    }
}

/// The GPU pool the test runner asks for when an `endpointConfig` names none.
pub const RUNNER_DEFAULT_GPU_IDS: &str = "AMPERE_16";

/// Splits a command line into words as a POSIX shell does without expanding anything:
/// whitespace separates words, single quotes keep everything, double quotes keep everything
/// but `\"`, `\\`, `\$` and `` \` ``, a backslash outside quotes keeps the next character.
/// `Err` names an unclosed quote.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err("a single quote is not closed".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => word.push(ch),
                            Some(ch) => {
                                word.push('\\');
                                word.push(ch);
                            }
                            None => return Err("a double quote is not closed".to_string()),
                        },
                        Some(ch) => word.push(ch),
                        None => return Err("a double quote is not closed".to_string()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(ch) = chars.next() {
                    word.push(ch);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// How `.runpod/hub.json` gives an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEnv {
    Fixed(String),
    Input {
        default: Option<String>,
        required: bool,
    },
}

/// The parts of `.runpod/hub.json` a validation uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hub {
    pub container_disk_gb: Option<u64>,
    /// `config.gpuIds`: the GPU pools the listing runs on.
    pub gpu_ids: Vec<String>,
    pub allowed_cuda_versions: Vec<String>,
    pub env: Vec<(String, HubEnv)>,
    /// The first preset's defaults: the values the Hub offers first.
    pub preset: Option<(String, Vec<(String, String)>)>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A field's problem: `file: field: message` (without the parts that are empty).
fn problem(file: &str, field: &str, message: impl std::fmt::Display) -> String {
    match (file.is_empty(), field.is_empty()) {
        (false, false) => format!("{file}: {field}: {message}"),
        (false, true) => format!("{file}: {message}"),
        (true, false) => format!("{field}: {message}"),
        (true, true) => message.to_string(),
    }
}

/// `field.name`, or `name` at the top.
fn sub(field: &str, name: &str) -> String {
    if field.is_empty() {
        name.to_string()
    } else {
        format!("{field}.{name}")
    }
}

fn parse_json(file: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text)
        .map_err(|e| format!("{file}: not valid JSON at line {}: {e}", e.line()))
}

/// An environment value as a string: hub.json writes booleans and numbers bare.
fn env_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A name an environment variable can have.
pub fn check_env_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "`{key}` is not an environment variable name (letters, digits and _, not starting with a digit)"
        ))
    }
}

/// The items of an optional list field: none when absent, an error naming `what` when it is
/// not a list.
fn items<'v>(
    file: &str,
    field: &str,
    v: Option<&'v Value>,
    what: &str,
) -> Result<&'v [Value], String> {
    match v {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(problem(
            file,
            field,
            format!("must be a list of {what}, found {}", kind(other)),
        )),
    }
}

fn cuda_list(file: &str, field: &str, v: Option<&Value>) -> Result<Vec<String>, String> {
    let items = items(file, field, v, "versions such as [\"12.4\"]")?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.as_str().and_then(cuda_version) {
            Some(_) => Ok(item.as_str().unwrap_or_default().to_string()),
            None => Err(problem(
                file,
                &format!("{field}[{i}]"),
                format!("must be a CUDA version such as \"12.4\", found {item}"),
            )),
        })
        .collect()
}

/// `"12.4"`, `"12.4.1"`, `"13"` as (major, minor).
pub fn cuda_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        None => 0,
        Some(m) => m.parse().ok()?,
    };
    Some((major, minor))
}

/// One test from its JSON object; `file` and `field` (either may be empty) prefix the errors.
pub fn test_case(
    file: &str,
    field: &str,
    v: &Value,
    default_name: String,
) -> Result<TestCase, String> {
    let Value::Object(m) = v else {
        return Err(problem(
            file,
            field,
            format!("must be an object with `input`, found {}", kind(v)),
        ));
    };
    let name = match m.get("name") {
        None => default_name,
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(other) => {
            return Err(problem(
                file,
                &sub(field, "name"),
                format!("must be a non-empty string, found {other}"),
            ))
        }
    };
    let input = match m.get("input") {
        Some(i @ Value::Object(_)) => i.clone(),
        Some(other) => {
            return Err(problem(
                file,
                &sub(field, "input"),
                format!("must be an object (the job's input), found {}", kind(other)),
            ))
        }
        None => {
            return Err(problem(
                file,
                &sub(field, "input"),
                "missing; every test needs the job input it sends",
            ))
        }
    };
    let timeout_ms = match m.get("timeout") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|t| t > 0) => n.as_u64(),
        Some(other) => {
            return Err(problem(
                file,
                &sub(field, "timeout"),
                format!("must be a positive whole number of milliseconds, found {other}"),
            ))
        }
    };
    // The Hub writes `expected_output`; the test runner's examples write `expectedOutput`.
    let expected_output = m
        .get("expected_output")
        .or_else(|| m.get("expectedOutput"))
        .cloned();
    Ok(TestCase {
        name,
        input,
        timeout_ms,
        expected_output,
        expectation_advisory: false,
    })
}

/// GPU ids as a list: a string of comma-separated ids (`"ADA_24,AMPERE_24"`) or a list.
fn gpu_ids(v: Option<&Value>) -> Vec<String> {
    let parts: Vec<String> = match v {
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .take(32)
        .collect()
}

/// RunPod's GPU pool ids and GPU type ids → their memory in GB (decimal, as RunPod names
/// them). A test meant for one of these needs at least that much on the instance's GPU.
pub const GPU_MEMORY_GB: &[(&str, u32)] = &[
    ("AMPERE_16", 16),
    ("AMPERE_24", 24),
    ("ADA_24", 24),
    ("ADA_32_PRO", 32),
    ("AMPERE_48", 48),
    ("ADA_48_PRO", 48),
    ("AMPERE_80", 80),
    ("ADA_80_PRO", 80),
    ("HOPPER_141", 141),
    ("NVIDIA RTX A4000", 16),
    ("NVIDIA RTX A4500", 20),
    ("NVIDIA RTX 4000 Ada Generation", 20),
    ("NVIDIA RTX A5000", 24),
    ("NVIDIA GeForce RTX 3090", 24),
    ("NVIDIA GeForce RTX 4090", 24),
    ("NVIDIA L4", 24),
    ("NVIDIA A10G", 24),
    ("NVIDIA GeForce RTX 5090", 32),
    ("NVIDIA RTX A6000", 48),
    ("NVIDIA A40", 48),
    ("NVIDIA L40", 48),
    ("NVIDIA L40S", 48),
    ("NVIDIA RTX 6000 Ada Generation", 48),
    ("NVIDIA A100 80GB PCIe", 80),
    ("NVIDIA A100-SXM4-80GB", 80),
    ("NVIDIA H100 PCIe", 80),
    ("NVIDIA H100 80GB HBM3", 80),
    ("NVIDIA H100 NVL", 94),
    ("NVIDIA H200", 141),
];

/// The least GPU memory any of `ids` offers (any of them would do), with the id: what the
/// tests need. `None` when none of the ids is known.
pub fn needed_gpu(ids: &[String]) -> Option<(u32, String)> {
    ids.iter()
        .filter_map(|id| {
            GPU_MEMORY_GB
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(id))
                .map(|(_, gb)| (*gb, id.clone()))
        })
        .min()
}

/// The runner's per-request timeout when a workflow gives none (runpod-test-runner's
/// `request-timeout` default, seconds).
pub const RUNNER_DEFAULT_TIMEOUT_SECONDS: u64 = 300;

/// Parses `.github/tests.json` as runpod's test runner (`runpod/runpod-test-runner`) reads
/// it: a list of tests, each named by its `hardwareConfig.endpointConfig.name` (else
/// `test_N`; a repeated name gets ` #N`, its index), its `expectedOutput` (or `output`)
/// compared and reported but never failing the test, and grouped by `hardwareConfig` as the
/// runner makes one template and endpoint per distinct `hardwareConfig`: a group's
/// `templateConfig.dockerArgs` is its container's command, its `templateConfig.env` its
/// environment.
pub fn parse_runner_tests(file: &str, text: &str) -> Result<TestsFile, String> {
    let doc = parse_json(file, text)?;
    let Value::Array(items) = &doc else {
        // The Hub's object form, written where the runner's list is expected: read as such.
        return parse_tests(file, text);
    };
    if items.is_empty() {
        return Err(problem(file, "", "is empty; list at least one test"));
    }
    let mut out = TestsFile::default();
    let mut names = std::collections::HashSet::new();
    // The runner groups by the JSON text of `hardwareConfig`; the groups keep first-seen order.
    let mut keys: Vec<String> = Vec::new();
    for (i, t) in items.iter().enumerate() {
        let field = format!("[{i}]");
        let endpoint = t
            .pointer("/hardwareConfig/endpointConfig/name")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|n| !n.is_empty());
        let mut case = test_case(
            file,
            &field,
            t,
            endpoint.map_or(format!("test_{}", i + 1), str::to_string),
        )?;
        if !names.insert(case.name.clone()) {
            case.name = format!("{} #{}", case.name, i + 1);
            names.insert(case.name.clone());
        }
        if case.expected_output.is_none() {
            case.expected_output = t.get("output").cloned();
        }
        case.expectation_advisory = true;
        out.tests.push(case);
        let hardware = t.get("hardwareConfig").unwrap_or(&Value::Null);
        let key = hardware.to_string();
        match keys.iter().position(|k| *k == key) {
            Some(g) => out.groups[g].tests.push(i),
            None => {
                let mut group = runner_group(file, &field, hardware, out.groups.len() + 1)?;
                group.tests.push(i);
                keys.push(key);
                out.groups.push(group);
            }
        }
    }
    // The tests need the GPU of their most demanding group; the count likewise.
    out.config.gpu_ids = out
        .groups
        .iter()
        .max_by_key(|g| needed_gpu(&g.gpu_ids).map(|(gb, _)| gb))
        .map(|g| g.gpu_ids.clone())
        .unwrap_or_default();
    out.config.gpu_count = out.groups.iter().filter_map(|g| g.gpu_count).max();
    Ok(out)
}

/// One `hardwareConfig` as the runner turns it into a template and an endpoint.
fn runner_group(file: &str, field: &str, hardware: &Value, n: usize) -> Result<TestGroup, String> {
    let at = |name: &str| sub(&sub(field, "hardwareConfig"), name);
    if !matches!(hardware, Value::Null | Value::Object(_)) {
        return Err(problem(
            file,
            &sub(field, "hardwareConfig"),
            format!("must be an object, found {}", kind(hardware)),
        ));
    }
    let template = hardware.get("templateConfig");
    let endpoint = hardware.get("endpointConfig");
    let mut group = TestGroup {
        label: template
            .and_then(|t| t.get("name"))
            .or_else(|| endpoint.and_then(|e| e.get("name")))
            .and_then(Value::as_str)
            .map_or(format!("group {n}"), str::to_string),
        ..TestGroup::default()
    };
    if let Some(existing) = hardware.get("endpoint").and_then(Value::as_str) {
        group.note = Some(format!(
            "{file} {field}: the runner sends these tests to the existing endpoint `{existing}`; here they run against this image with its own command"
        ));
        return Ok(group);
    }
    if let Some(existing) = hardware.get("template").and_then(Value::as_str) {
        group.note = Some(format!(
            "{file} {field}: the runner starts these tests from the existing template `{existing}`, whose command and environment are not in the repository; here they run with the image's own"
        ));
    }
    group.gpu_ids = gpu_ids(endpoint.and_then(|e| e.get("gpuIds")));
    if group.gpu_ids.is_empty() {
        group.gpu_ids = vec![RUNNER_DEFAULT_GPU_IDS.to_string()];
    }
    group.gpu_count = match endpoint.and_then(|e| e.get("gpuCount")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
            problem(
                file,
                &at("endpointConfig.gpuCount"),
                format!("must be a whole number of GPUs, found {v}"),
            )
        })?),
    };
    let Some(template) = template else {
        return Ok(group);
    };
    match template.get("dockerArgs") {
        None | Some(Value::Null) => {}
        Some(Value::String(args)) if args.trim().is_empty() => {}
        Some(Value::String(args)) => {
            let f = at("templateConfig.dockerArgs");
            let words = split_words(args).map_err(|e| problem(file, &f, e))?;
            group.command = Some(words);
            group.command_from = Some(format!("{file} {f}"));
        }
        Some(other) => {
            return Err(problem(
                file,
                &at("templateConfig.dockerArgs"),
                format!(
                    "must be a string (the container's command), found {}",
                    kind(other)
                ),
            ))
        }
    }
    let f = at("templateConfig.env");
    for (i, (key, item)) in env_list(file, &f, template.get("env"))?
        .into_iter()
        .enumerate()
    {
        let value = item.get("value").and_then(env_text).ok_or_else(|| {
            problem(
                file,
                &format!("{f}[{i}].value"),
                "missing or not a string, number or boolean",
            )
        })?;
        group.env.push((key, value));
    }
    if !group.env.is_empty() {
        group.env_from = Some(format!("{file} {f}"));
    }
    group.container_disk_gb = template.get("containerDiskInGb").and_then(Value::as_u64);
    Ok(group)
}

/// The `request-timeout` (seconds) a workflow gives runpod's test runner, with where it was
/// found (`file:line`): the first workflow file that uses `runpod/runpod-test-runner` and sets
/// the input. `files` are (name, text) pairs; lines are read as text, so a comment or an
/// expression (`${{ … }}`) is not taken for a value.
pub fn runner_request_timeout(files: &[(String, String)]) -> Option<(u64, String)> {
    for (name, text) in files {
        if !text.contains("runpod/runpod-test-runner") {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            let line = line.split(" #").next().unwrap_or("").trim();
            let Some(value) = line.strip_prefix("request-timeout:") else {
                continue;
            };
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if let Ok(seconds) = value.parse::<u64>() {
                if seconds > 0 {
                    return Some((seconds, format!("{name}:{}", i + 1)));
                }
            }
        }
    }
    None
}

/// Whether the answer meets an expectation: an expectation with a `status`, `output` or
/// `error` key is matched against the whole answer; any other against the output.
pub fn expectation_met(answer: &Value, want: &Value) -> bool {
    let whole = want.as_object().is_some_and(|m| {
        m.keys()
            .any(|k| matches!(k.as_str(), "status" | "output" | "error"))
    });
    let output = answer.get("output").unwrap_or(&Value::Null);
    contains(if whole { answer } else { output }, want)
}

fn env_list(file: &str, field: &str, v: Option<&Value>) -> Result<Vec<(String, Value)>, String> {
    let items = items(file, field, v, "{\"key\", \"value\"} objects")?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let key = item
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| problem(file, &format!("{f}.key"), "missing or not a string"))?;
        check_env_key(key).map_err(|e| problem(file, &format!("{f}.key"), e))?;
        out.push((key.to_string(), item.clone()));
    }
    Ok(out)
}

/// Parses a Hub tests file (`{"tests": [...], "config": {...}}`) or a test runner's list of
/// tests (`[{"input", "expected_output"?}, ...]`).
pub fn parse_tests(file: &str, text: &str) -> Result<TestsFile, String> {
    let doc = parse_json(file, text)?;
    let (tests, config) = match &doc {
        Value::Array(items) => (items.as_slice(), None),
        Value::Object(m) => match m.get("tests") {
            Some(Value::Array(items)) => (items.as_slice(), m.get("config")),
            Some(other) => {
                return Err(problem(
                    file,
                    "tests",
                    format!("must be a list of tests, found {}", kind(other)),
                ))
            }
            None => {
                return Err(problem(
                    file,
                    "tests",
                    "missing; the file must have a `tests` list",
                ))
            }
        },
        other => {
            return Err(format!(
                "{file}: must be an object with `tests` or a list of tests, found {}",
                kind(other)
            ))
        }
    };
    if tests.is_empty() {
        return Err(problem(file, "tests", "is empty; list at least one test"));
    }
    let mut out = TestsFile::default();
    let mut names = std::collections::HashSet::new();
    for (i, t) in tests.iter().enumerate() {
        let field = format!("tests[{i}]");
        let case = test_case(file, &field, t, format!("test_{}", i + 1))?;
        if !names.insert(case.name.clone()) {
            return Err(problem(
                file,
                &sub(&field, "name"),
                format!("`{}` is used by an earlier test", case.name),
            ));
        }
        out.tests.push(case);
    }
    if let Some(config) = config {
        let Value::Object(c) = config else {
            return Err(problem(
                file,
                "config",
                format!("must be an object, found {}", kind(config)),
            ));
        };
        out.config.gpu_count = match c.get("gpuCount") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                problem(
                    file,
                    "config.gpuCount",
                    format!("must be a whole number, found {v}"),
                )
            })?),
        };
        out.config.allowed_cuda_versions = cuda_list(
            file,
            "config.allowedCudaVersions",
            c.get("allowedCudaVersions"),
        )?;
        out.config.gpu_ids = gpu_ids(c.get("gpuTypeId").or_else(|| c.get("gpuIds")));
        for (i, (key, item)) in env_list(file, "config.env", c.get("env"))?
            .into_iter()
            .enumerate()
        {
            let value = item.get("value").and_then(env_text).ok_or_else(|| {
                problem(
                    file,
                    &format!("config.env[{i}].value"),
                    "missing or not a string, number or boolean",
                )
            })?;
            out.config.env.push((key, value));
        }
    }
    Ok(out)
}

/// Parses `test_input.json` (`{"input": {...}}`) as one test named `test_input`.
pub fn parse_test_input(file: &str, text: &str) -> Result<TestCase, String> {
    let doc = parse_json(file, text)?;
    let mut case = test_case(file, "", &doc, "test_input".to_string())?;
    case.name = "test_input".to_string();
    Ok(case)
}

/// Whether `.runpod/hub.json` says the listing runs on CPU (`config.runsOn: "CPU"`, any case).
pub fn hub_runs_on_cpu(text: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    doc.get("config")
        .and_then(|c| c.get("runsOn"))
        .and_then(Value::as_str)
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("cpu"))
}

/// Parses the parts of `.runpod/hub.json` that matter here.
pub fn parse_hub(file: &str, text: &str) -> Result<Hub, String> {
    let doc = parse_json(file, text)?;
    let Value::Object(top) = &doc else {
        return Err(format!("{file}: must be an object, found {}", kind(&doc)));
    };
    let mut hub = Hub::default();
    let Some(config) = top.get("config") else {
        return Ok(hub);
    };
    let Value::Object(c) = config else {
        return Err(problem(
            file,
            "config",
            format!("must be an object, found {}", kind(config)),
        ));
    };
    hub.gpu_ids = gpu_ids(c.get("gpuIds"));
    hub.container_disk_gb = match c.get("containerDiskInGb") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            problem(
                file,
                "config.containerDiskInGb",
                format!("must be a whole number of GB, found {v}"),
            )
        })?),
    };
    hub.allowed_cuda_versions = cuda_list(
        file,
        "config.allowedCudaVersions",
        c.get("allowedCudaVersions"),
    )?;
    for (i, (key, item)) in env_list(file, "config.env", c.get("env"))?
        .into_iter()
        .enumerate()
    {
        let given = if let Some(v) = item.get("value") {
            HubEnv::Fixed(env_text(v).ok_or_else(|| {
                problem(
                    file,
                    &format!("config.env[{i}].value"),
                    "must be a string, number or boolean",
                )
            })?)
        } else if let Some(input) = item.get("input") {
            HubEnv::Input {
                default: input.get("default").and_then(env_text),
                required: input
                    .get("required")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            }
        } else {
            return Err(problem(
                file,
                &format!("config.env[{i}]"),
                "needs `value` or `input`",
            ));
        };
        hub.env.push((key, given));
    }
    if let Some(Value::Array(presets)) = c.get("presets") {
        if let Some(first) = presets.first() {
            let name = first
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("preset 1")
                .to_string();
            let defaults = first
                .get("defaults")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| env_text(v).map(|t| (k.clone(), t)))
                        .filter(|(k, _)| check_env_key(k).is_ok())
                        .collect()
                })
                .unwrap_or_default();
            hub.preset = Some((name, defaults));
        }
    }
    Ok(hub)
}

/// Whether `actual` holds `expected`: objects by subset (every expected key, recursively),
/// lists element by element with the same length, anything else by equality.
pub fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| contains(av, ev))),
        (Value::Array(a), Value::Array(e)) => {
            a.len() == e.len() && a.iter().zip(e).all(|(av, ev)| contains(av, ev))
        }
        (Value::Number(a), Value::Number(e)) => a.as_f64() == e.as_f64(),
        _ => actual == expected,
    }
}

/// The most characters of an output or error kept in a report.
pub const EXCERPT_CHARS: usize = 300;

/// A bounded one-line rendering of a JSON value.
pub fn excerpt(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= EXCERPT_CHARS {
        one_line
    } else {
        let cut: String = one_line.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}…")
    }
}

/// A job's error as the SDK gives it: for a handler that raised, a JSON string with
/// `error_type` (`<class 'ValueError'>`) and `error_message`, said as `ValueError: message`;
/// anything else as its excerpt.
pub fn sdk_error(error: &Value) -> String {
    let parsed = error
        .as_str()
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    let fields = parsed.as_ref().or(Some(error)).and_then(|v| {
        let message = v.get("error_message")?.as_str()?;
        let kind = v.get("error_type").and_then(Value::as_str).unwrap_or("");
        let kind = kind
            .trim_start_matches("<class '")
            .trim_end_matches("'>")
            .rsplit('.')
            .next()
            .unwrap_or("");
        Some((kind.to_string(), message.to_string()))
    });
    match fields {
        Some((kind, message)) if !kind.is_empty() => {
            excerpt(&Value::String(format!("{kind}: {message}")))
        }
        Some((_, message)) => excerpt(&Value::String(message)),
        None => excerpt(error),
    }
}

/// Judges one `/runsync` answer (HTTP 200 with a JSON body). A test passes on `COMPLETED`
/// with an output that has no `error` key (handlers often return `{"error": ...}` instead of
/// raising) and, when an expectation is given, that contains it. An expectation with a
/// `status`, `output` or `error` key is matched against the whole answer; any other against
/// the output. `Err` is the one-line reason it failed.
pub fn judge(answer: &Value, expected: Option<&Value>) -> Result<(), String> {
    let mut status = answer.get("status").and_then(Value::as_str).unwrap_or("");
    let output = answer.get("output").unwrap_or(&Value::Null);
    // The SDK before 1.5 answers /runsync with the job's result alone (`{"id", "output"}` or
    // `{"id", "error"}`), no `status`: an error is a failure, an output a completion.
    if status.is_empty() && answer.get("status").is_none() {
        if answer.get("error").is_some_and(|e| !e.is_null()) {
            status = "FAILED";
        } else if answer.get("output").is_some() {
            status = "COMPLETED";
        }
    }
    match status {
        "COMPLETED" => {}
        "FAILED" => {
            let error = answer
                .get("error")
                .map_or_else(|| "no error given".to_string(), sdk_error);
            return Err(format!("the job FAILED: {error}"));
        }
        "" => return Err(format!("the answer has no status: {}", excerpt(answer))),
        other => return Err(format!("the job ended {other}, not COMPLETED")),
    }
    if let Some(error) = output.get("error") {
        return Err(format!("the output has an `error`: {}", excerpt(error)));
    }
    // A generator handler's output is the list of what it yielded; on the platform an item
    // with an `error` fails the job (the SDK's rp_job), though local /runsync says COMPLETED.
    if let Some((i, error)) = output.as_array().and_then(|items| {
        items
            .iter()
            .enumerate()
            .find_map(|(i, item)| item.get("error").map(|e| (i, e)))
    }) {
        return Err(format!(
            "yielded item {} has an `error` (the platform fails the job): {}",
            i + 1,
            excerpt(error)
        ));
    }
    if let Some(want) = expected {
        let whole = want.as_object().is_some_and(|m| {
            m.keys()
                .any(|k| matches!(k.as_str(), "status" | "output" | "error"))
        });
        let (against, what) = if whole {
            (answer, "answer")
        } else {
            (output, "output")
        };
        if !expectation_met(answer, want) {
            return Err(format!(
                "the {what} does not match expected_output {}: got {}",
                excerpt(want),
                excerpt(against)
            ));
        }
    }
    Ok(())
}

/// The `/runsync` request body: `{"input": …}`.
pub fn runsync_body(input: &Value) -> Vec<u8> {
    serde_json::json!({ "input": input })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hub_tests_file() {
        let t = parse_tests(
            HUB_TESTS,
            r#"{"tests": [{"name": "a", "input": {"p": 1}, "timeout": 10000},
                          {"name": "b", "input": {}, "expected_output": {"x": 1}}],
                "config": {"gpuCount": 1, "allowedCudaVersions": ["12.4", "13.0"],
                           "env": [{"key": "MODEL_NAME", "value": "m"}, {"key": "N", "value": 2}]}}"#,
        )
        .unwrap();
        assert_eq!(t.tests.len(), 2);
        assert_eq!(t.tests[0].timeout_ms, Some(10000));
        assert_eq!(t.tests[1].expected_output, Some(json!({"x": 1})));
        assert_eq!(t.config.allowed_cuda_versions, ["12.4", "13.0"]);
        assert_eq!(
            t.config.env,
            [("MODEL_NAME".into(), "m".into()), ("N".into(), "2".into())]
        );
    }

    #[test]
    fn runner_list_and_test_input() {
        let t = parse_tests(
            RUNNER_TESTS,
            r#"[{"input": {"name": "Dolly"}, "expectedOutput": "Hello, Dolly!"}, {"input": {}}]"#,
        )
        .unwrap();
        assert_eq!(t.tests[0].name, "test_1");
        assert_eq!(t.tests[0].expected_output, Some(json!("Hello, Dolly!")));
        let one = parse_test_input(TEST_INPUT, r#"{"input": {"prompt": "x"}}"#).unwrap();
        assert_eq!(one.name, "test_input");
    }

    #[test]
    fn errors_name_file_and_field() {
        let cases = [
            (
                r#"{"tests": [{"name": "a"}]}"#,
                ".runpod/tests.json: tests[0].input: missing",
            ),
            (
                r#"{"tests": [{"input": {}, "timeout": "30s"}]}"#,
                "tests[0].timeout: must be a positive whole number of milliseconds",
            ),
            (r#"{"tests": []}"#, "tests: is empty"),
            (
                r#"{"tests": [{"name": "a", "input": {}}, {"name": "a", "input": {}}]}"#,
                "tests[1].name: `a` is used by an earlier test",
            ),
            (
                r#"{"tests": [{"input": {}}], "config": {"allowedCudaVersions": ["twelve"]}}"#,
                "config.allowedCudaVersions[0]",
            ),
            (
                r#"{"tests": [{"input": {}}], "config": {"env": [{"key": "1X", "value": "v"}]}}"#,
                "config.env[0].key",
            ),
            ("{", "not valid JSON at line 1"),
            ("3", "must be an object with `tests` or a list of tests"),
        ];
        for (text, want) in cases {
            let err = parse_tests(HUB_TESTS, text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn sub_second_timeouts_are_called_out() {
        let t = parse_tests(HUB_TESTS, r#"{"tests": [{"input": {}, "timeout": 30}]}"#).unwrap();
        assert!(t.tests[0]
            .timeout_problem()
            .unwrap()
            .contains("did you mean 30000"));
        let ok = parse_tests(HUB_TESTS, r#"{"tests": [{"input": {}, "timeout": 1000}]}"#).unwrap();
        assert_eq!(ok.tests[0].timeout_problem(), None);
    }

    #[test]
    fn hub_file() {
        let hub = parse_hub(
            HUB_FILE,
            r#"{"config": {"containerDiskInGb": 150, "allowedCudaVersions": ["13.0"],
                "presets": [{"name": "p", "defaults": {"MODEL_NAME": "m"}}],
                "env": [{"key": "MODEL_NAME", "input": {"required": true}},
                        {"key": "MODE", "input": {"default": "auto"}},
                        {"key": "SKIP", "input": {"default": false}},
                        {"key": "FIXED", "value": "v"}]}}"#,
        )
        .unwrap();
        assert_eq!(hub.container_disk_gb, Some(150));
        assert_eq!(
            hub.env[0].1,
            HubEnv::Input {
                default: None,
                required: true
            }
        );
        assert_eq!(
            hub.env[2].1,
            HubEnv::Input {
                default: Some("false".into()),
                required: false
            }
        );
        assert_eq!(hub.env[3].1, HubEnv::Fixed("v".into()));
        assert_eq!(
            hub.preset,
            Some(("p".into(), vec![("MODEL_NAME".into(), "m".into())]))
        );
        assert!(
            parse_hub(HUB_FILE, r#"{"config": {"containerDiskInGb": "big"}}"#)
                .unwrap_err()
                .contains("config.containerDiskInGb")
        );
    }

    #[test]
    fn gpu_classes() {
        let ids = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            needed_gpu(&ids(&["ADA_48_PRO"])),
            Some((48, "ADA_48_PRO".into()))
        );
        assert_eq!(
            needed_gpu(&ids(&["AMPERE_80", "ADA_24", "UNKNOWN_9"])),
            Some((24, "ADA_24".into())),
            "any listed pool would do: the smallest"
        );
        assert_eq!(needed_gpu(&ids(&["UNKNOWN_9"])), None);
        assert_eq!(
            gpu_ids(Some(&json!("ADA_24, AMPERE_24"))),
            ["ADA_24", "AMPERE_24"]
        );
        assert_eq!(gpu_ids(Some(&json!(["NVIDIA L40S"]))), ["NVIDIA L40S"]);
    }

    #[test]
    fn the_runners_tests_file() {
        let text = r#"[
            {"hardwareConfig": {"endpointConfig": {"name": "basic-a10"}}, "input": {"p": 1}, "expectedOutput": {"x": 1}},
            {"hardwareConfig": {"endpointConfig": {"name": "basic-a10"}}, "input": {"p": 2}},
            {"input": {"p": 3}}
        ]"#;
        let f = parse_runner_tests(".github/tests.json", text).unwrap();
        let names: Vec<&str> = f.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["basic-a10", "basic-a10 #2", "test_3"]);
        assert!(f.tests.iter().all(|t| t.expectation_advisory));
        assert_eq!(f.tests[0].expected_output, Some(json!({"x": 1})));
        let workflows = vec![
            ("ci.yml".to_string(), "jobs:\n  t:\n    steps:\n      - run: echo\n".to_string()),
            (
                "test.yml".to_string(),
                "      - uses: runpod/runpod-test-runner@v1.7\n        with:\n          request-timeout: '600'  # ten minutes\n".to_string(),
            ),
        ];
        assert_eq!(
            runner_request_timeout(&workflows),
            Some((600, "test.yml:3".to_string()))
        );
        assert_eq!(runner_request_timeout(&workflows[..1]), None);
        let expr = vec![(
            "t.yml".to_string(),
            "uses: runpod/runpod-test-runner@v1\nrequest-timeout: ${{ inputs.t }}\n".to_string(),
        )];
        assert_eq!(
            runner_request_timeout(&expr),
            None,
            "an expression is not a value"
        );
    }

    #[test]
    fn runner_groups_follow_the_hardware_config() {
        let text = r#"[
            {"hardwareConfig": {"endpointConfig": {"name": "a", "gpuIds": "ADA_48_PRO", "gpuCount": 2},
                                "templateConfig": {"name": "gen", "dockerArgs": "python3 -u /gen.py --mode 'two words'",
                                                   "env": [{"key": "MODE", "value": "gen"}], "containerDiskInGb": 40}},
             "input": {"p": 1}, "output": {"x": 1}},
            {"hardwareConfig": {"endpointConfig": {"name": "b"}}, "input": {"p": 2}},
            {"hardwareConfig": {"endpointConfig": {"name": "a", "gpuIds": "ADA_48_PRO", "gpuCount": 2},
                                "templateConfig": {"name": "gen", "dockerArgs": "python3 -u /gen.py --mode 'two words'",
                                                   "env": [{"key": "MODE", "value": "gen"}], "containerDiskInGb": 40}},
             "input": {"p": 3}},
            {"hardwareConfig": {"endpoint": "faster-whisper"}, "input": {"p": 4}}
        ]"#;
        let f = parse_runner_tests(".github/tests.json", text).unwrap();
        assert_eq!(f.groups.len(), 3);
        let g = &f.groups[0];
        assert_eq!(g.label, "gen");
        assert_eq!(g.tests, [0, 2]);
        assert_eq!(
            g.command.as_deref().unwrap(),
            ["python3", "-u", "/gen.py", "--mode", "two words"]
        );
        assert_eq!(
            g.command_from.as_deref(),
            Some(".github/tests.json [0].hardwareConfig.templateConfig.dockerArgs")
        );
        assert_eq!(g.env, [("MODE".to_string(), "gen".to_string())]);
        assert_eq!((g.gpu_count, g.container_disk_gb), (Some(2), Some(40)));
        // The runner's default pool for an endpoint made without gpuIds.
        assert_eq!(f.groups[1].gpu_ids, [RUNNER_DEFAULT_GPU_IDS]);
        assert_eq!(f.groups[1].command, None);
        assert!(f.groups[2]
            .note
            .as_deref()
            .unwrap()
            .contains("existing endpoint `faster-whisper`"));
        // The most demanding group's GPU and count are the tests'.
        assert_eq!(f.config.gpu_ids, ["ADA_48_PRO"]);
        assert_eq!(f.config.gpu_count, Some(2));
        // `output` is the runner's other name for `expectedOutput`.
        assert_eq!(f.tests[0].expected_output, Some(json!({"x": 1})));
        let bad = r#"[{"hardwareConfig": {"templateConfig": {"dockerArgs": "python3 'x"}}, "input": {}}]"#;
        assert_eq!(
            parse_runner_tests("t.json", bad).unwrap_err(),
            "t.json: [0].hardwareConfig.templateConfig.dockerArgs: a single quote is not closed"
        );
        let bad =
            r#"[{"hardwareConfig": {"templateConfig": {"dockerArgs": ["python3"]}}, "input": {}}]"#;
        assert!(parse_runner_tests("t.json", bad)
            .unwrap_err()
            .contains("dockerArgs: must be a string (the container's command), found a list"));
    }

    #[test]
    fn words_split_as_a_shell_does() {
        let w = |s: &str| split_words(s).unwrap();
        assert_eq!(w(r"  a  b\tc "), ["a", "btc"]);
        assert_eq!(
            w(r#"bash -c "echo \"hi\" \$HOME; ls""#),
            ["bash", "-c", r#"echo "hi" $HOME; ls"#]
        );
        assert_eq!(w("a'b c'd"), ["ab cd"]);
        assert_eq!(w("''"), [""]);
        assert_eq!(w(r#""a\nb""#), [r"a\nb"]);
        assert!(split_words("\"open").is_err());
        assert!(w("").is_empty());
    }

    #[test]
    fn the_pass_rule() {
        let done = |out: Value| json!({"id": "t", "status": "COMPLETED", "output": out});
        assert_eq!(judge(&done(json!({"text": "hi"})), None), Ok(()));
        let e = judge(&done(json!({"error": "CUDA out of memory"})), None).unwrap_err();
        assert!(e.contains("CUDA out of memory"), "{e}");
        let e = judge(
            &json!({"status": "FAILED", "error": "Traceback: boom"}),
            None,
        )
        .unwrap_err();
        assert!(e.contains("FAILED: Traceback: boom"), "{e}");
        assert!(judge(&json!({"status": "IN_PROGRESS"}), None).is_err());
        // A handler that raised: the SDK's error document, said as the exception.
        let raised = json!({"status": "FAILED", "error": "{\"error_type\": \"<class 'torch.cuda.OutOfMemoryError'>\", \"error_message\": \"CUDA out of memory\", \"error_traceback\": \"Traceback...\"}"});
        assert_eq!(
            judge(&raised, None),
            Err("the job FAILED: OutOfMemoryError: CUDA out of memory".to_string())
        );
        assert!(judge(&json!({"detail": "x"}), None)
            .unwrap_err()
            .contains("no status"));
        // The SDK before 1.5: the result alone, no status.
        assert_eq!(judge(&json!({"id": "t", "output": {"a": 1}}), None), Ok(()));
        assert_eq!(
            judge(&json!({"id": "t", "error": "boom"}), None),
            Err("the job FAILED: boom".to_string())
        );
        // Expectations: on the output, or on the whole answer when they name its keys.
        assert_eq!(
            judge(
                &done(json!({"a": 1, "b": [1, 2]})),
                Some(&json!({"b": [1, 2]}))
            ),
            Ok(())
        );
        assert!(judge(&done(json!({"a": 1})), Some(&json!({"a": 2})))
            .unwrap_err()
            .contains("does not match"));
        assert_eq!(
            judge(&done(json!("Hello, Dolly!")), Some(&json!("Hello, Dolly!"))),
            Ok(())
        );
        assert_eq!(
            judge(&done(json!(3)), Some(&json!({"status": "COMPLETED"}))),
            Ok(())
        );
        assert!(judge(&done(json!([1, 2])), Some(&json!([1]))).is_err());
        // A generator's yields: an item with an `error` fails, as on the platform.
        assert_eq!(
            judge(&done(json!([{"token": "a"}, {"token": "b"}])), None),
            Ok(())
        );
        assert_eq!(
            judge(
                &done(json!([{"token": "a"}, {"error": "engine died"}])),
                None
            ),
            Err(
                "yielded item 2 has an `error` (the platform fails the job): engine died"
                    .to_string()
            )
        );
        assert!(contains(&json!(1.0), &json!(1)));
    }

    #[test]
    fn excerpts_are_bounded() {
        let long = Value::String("x ".repeat(1000));
        assert!(excerpt(&long).chars().count() <= EXCERPT_CHARS + 1);
        assert_eq!(cuda_version("12.4.1"), Some((12, 4)));
        assert_eq!(cuda_version("13"), Some((13, 0)));
        assert_eq!(cuda_version("x"), None);
    }
}
