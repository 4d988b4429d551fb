//! `infra/workers-config.yaml` and `infra/repos.yaml`: parsed, validated, every problem reported with `file:line: field`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::{self, CloneSource};
use crate::runpod::{self, TestCase};
use crate::yaml::{self, Node, Value};

/// The prompt a repository gets when its entry does not give one (seed 002's prompt).
pub const DEFAULT_PROMPT: &str = "validate the repo and see if its still working";
/// Seed 002: the hard timeout defaults to 30 minutes.
pub const DEFAULT_TIMEOUT_MINUTES: u64 = 30;
/// Seed 002: at most 10 instances at once unless the config says otherwise.
pub const DEFAULT_MAX_CONCURRENT_INSTANCES: u32 = 10;
/// SQS keeps a message invisible for at most 12 hours in all, so no job may run longer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// Upper bound on `max_concurrent_instances`, a guard against typos that would cost money.
pub const MAX_INSTANCES_LIMIT: u32 = 100;

/// A repository and where to fetch it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoRef {
    pub organization: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

impl RepoRef {
    /// `org/name`, the way people write it.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.organization, self.name)
    }

    /// The URL `git clone` is given: the override, or GitHub's.
    pub fn clone_url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("https://github.com/{}/{}", self.organization, self.name))
    }
}

/// Everything needed to run one repository's job: what a config entry and a queue message both carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub repo: RepoRef,
    pub prompt: String,
    pub gpu_required: bool,
    pub timeout: Duration,
    pub instance_type: Option<String>,
    /// The pool it runs in (`pool:`), over the routing by GPU (`janitor_model::pools`).
    pub pool: Option<String>,
    pub dockerfile: Option<String>,
    pub smoke_command: Option<Vec<String>>,
    pub expected_errors: Vec<String>,
    pub agent_image: Option<String>,
    /// Tests given in the config (`tests:`), before any file in the repository.
    pub tests: Vec<TestCase>,
    /// A tests file in the repository (`tests_file:`), in the Hub's format.
    pub tests_file: Option<String>,
    /// Whether a GPU job fails when its tests never touched the GPU (`gpu_must_be_used`).
    pub gpu_must_be_used: bool,
    /// Environment the worker is started with (`env:`), over the repository's own values.
    pub env: Vec<(String, String)>,
    /// How the image is built (`builder:`, `target:`, `build_args:`, `build_secrets:`).
    pub build: BuildOptions,
    /// How many rounds the agent gets to fix a failure (`max_fix_attempts:`).
    pub max_fix_attempts: u32,
    /// When the agent runs and its bounds (`agent:`, `max_turns:`, `model_budget_usd:`).
    pub agent: AgentOptions,
    /// Whether a fix is pushed and proposed as a pull request (`publish:`), else only kept
    /// as a patch.
    pub publish: bool,
    /// Whether the verdict is posted as a commit status on the validated commit
    /// (`report_status:`, per repository or for the file; `None`: the file's, else no).
    pub report_status: Option<bool>,
    /// The job's secrets: an environment name and where its value is kept
    /// (`secretsmanager:janitor/…` or `ssm:/janitor/…`), the file's global `secrets:` under
    /// the repository's own.
    pub secrets: Vec<(String, String)>,
}

/// Where a job secret's value is kept; only the `janitor/` names (the instance role's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// An AWS Secrets Manager secret's name (`janitor/anthropic`).
    SecretsManager(String),
    /// An SSM parameter's name (`/janitor/github-token`), a SecureString or not.
    Ssm(String),
}

/// Reads `secretsmanager:janitor/NAME` or `ssm:/janitor/NAME`.
pub fn parse_secret_ref(text: &str) -> Result<SecretRef, String> {
    let valid = "write `secretsmanager:janitor/NAME` or `ssm:/janitor/NAME`";
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
    };
    match text.split_once(':') {
        Some(("secretsmanager", name)) if name.starts_with("janitor/") && name_ok(&name[8..]) => {
            Ok(SecretRef::SecretsManager(name.to_string()))
        }
        Some(("ssm", name)) if name.starts_with("/janitor/") && name_ok(&name[9..]) => {
            Ok(SecretRef::Ssm(name.to_string()))
        }
        Some(("secretsmanager" | "ssm", _)) => Err(format!(
            "`{text}` is outside the janitor/ names the instance role may read; {valid}"
        )),
        _ => Err(format!("`{text}` is not a secret reference; {valid}")),
    }
}

/// The agent's rounds unless a repository says otherwise (as runpod's janitor agent does).
pub const DEFAULT_MAX_FIX_ATTEMPTS: u32 = 3;
/// The most rounds a repository may ask for.
pub const MAX_FIX_ATTEMPTS: u32 = 10;

/// When the agent runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    /// Only when the validation failed for the repository's sake: it fixes.
    #[default]
    OnFailure,
    /// Also on a passing repository: it carries out the prompt, and a change that passes
    /// becomes a pull request (`changed`).
    Always,
    /// Never, even with an agent image: validation only.
    Never,
}

impl AgentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentMode::OnFailure => "on_failure",
            AgentMode::Always => "always",
            AgentMode::Never => "never",
        }
    }
}

/// The agent's default turn limit per attempt.
pub const DEFAULT_MAX_TURNS: u32 = 30;
/// The most turns an attempt may be given.
pub const MAX_TURNS: u32 = 200;
/// The agent's default model budget per job, in cents.
pub const DEFAULT_MODEL_BUDGET_CENTS: u32 = 500;
/// The largest model budget per job, in cents.
pub const MAX_MODEL_BUDGET_CENTS: u32 = 10_000;

/// When the agent runs, and how far it may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentOptions {
    pub mode: AgentMode,
    /// Turns (model calls) per attempt.
    pub max_turns: u32,
    /// The model spend for the whole job, every attempt together, in cents.
    pub budget_cents: u32,
    /// The Messages API the agent calls (`model_api_url:`; a gateway, a proxy, a stand-in),
    /// else the agent's default.
    pub api_url: Option<String>,
    /// The model it asks for (`model:`), else the agent's default.
    pub model: Option<String>,
    /// Whether the config (or message) said `agent:`: then a job without `agent_image` gets
    /// the instance's default agent (janitor's own).
    pub asked: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            mode: AgentMode::OnFailure,
            max_turns: DEFAULT_MAX_TURNS,
            budget_cents: DEFAULT_MODEL_BUDGET_CENTS,
            api_url: None,
            model: None,
            asked: false,
        }
    }
}

/// A model API URL: `https://…`, or `http://` to this machine's loopback only (a token is
/// sent there).
pub fn check_model_api_url(url: &str) -> Result<(), String> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| {
            url.strip_prefix(p)
                .is_some_and(|r| r.is_empty() || r.starts_with([':', '/']))
        });
    let https = url.strip_prefix("https://").is_some_and(|r| !r.is_empty());
    if (https || loopback) && !url.chars().any(char::is_whitespace) && url.len() <= 500 {
        Ok(())
    } else {
        Err(format!(
            "`{url}` is not a model API URL: use https://host[/path] (or http://127.0.0.1:PORT for a local stand-in)"
        ))
    }
}

/// A model name as the API takes it (`claude-sonnet-4-5`, a Bedrock model or profile id).
pub fn check_model(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a model name: letters, digits and `._:/@-`, such as claude-sonnet-4-5"
        ))
    }
}

/// `2.50` (dollars) as cents, from 1 cent to [`MAX_MODEL_BUDGET_CENTS`].
pub fn parse_budget(text: &str) -> Result<u32, String> {
    let dollars: f64 = text
        .trim()
        .trim_start_matches('$')
        .parse()
        .map_err(|_| format!("must be an amount in US dollars such as 2.50, found `{text}`"))?;
    let cents = (dollars * 100.0).round();
    if !(1.0..=f64::from(MAX_MODEL_BUDGET_CENTS)).contains(&cents) {
        return Err(format!(
            "must be from 0.01 to {}, found {text}",
            MAX_MODEL_BUDGET_CENTS / 100
        ));
    }
    Ok(cents as u32)
}

/// Which of the engine's builders builds the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    /// BuildKit through the engine API: cache and secret mounts, multi-stage targets.
    #[default]
    Buildkit,
    /// The engine's legacy builder, deprecated since Docker Engine 23; only when asked for.
    Classic,
}

impl Builder {
    pub fn as_str(self) -> &'static str {
        match self {
            Builder::Buildkit => "buildkit",
            Builder::Classic => "classic",
        }
    }
}

/// A repository's build options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    pub builder: Builder,
    /// The multi-stage target (`--target`).
    pub target: Option<String>,
    /// `--build-arg` values.
    pub args: Vec<(String, String)>,
    /// Ids of secrets the build may mount (`RUN --mount=type=secret,id=ID`); the daemon reads
    /// each from its secrets directory.
    pub secrets: Vec<String>,
}

impl JobSpec {
    /// The agent image this job runs: its own `agent_image`, else, when its config asked for
    /// an agent (`agent:`), `default` (the instance's, janitor's own agent); none with
    /// `agent: never`.
    pub fn agent_image_or(&self, default: Option<&str>) -> Option<String> {
        if self.agent.mode == AgentMode::Never {
            return None;
        }
        self.agent_image
            .clone()
            .or_else(|| default.filter(|_| self.agent.asked).map(str::to_string))
    }

    /// A repository with the defaults: the default prompt, a GPU, no overrides.
    pub fn new(repo: RepoRef, timeout: Duration) -> Self {
        JobSpec {
            repo,
            prompt: DEFAULT_PROMPT.to_string(),
            gpu_required: true,
            timeout,
            instance_type: None,
            pool: None,
            dockerfile: None,
            smoke_command: None,
            expected_errors: Vec::new(),
            agent_image: None,
            tests: Vec::new(),
            tests_file: None,
            gpu_must_be_used: true,
            env: Vec::new(),
            build: BuildOptions::default(),
            max_fix_attempts: DEFAULT_MAX_FIX_ATTEMPTS,
            agent: AgentOptions::default(),
            publish: true,
            report_status: None,
            secrets: Vec::new(),
        }
    }
}

/// A validated workers config.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkersConfig {
    pub path: PathBuf,
    pub repositories: Vec<JobSpec>,
    pub default_timeout: Duration,
    pub max_concurrent_instances: u32,
    /// A lower limit for some pools (`max_instances_by_pool: {gpu-48: 2}`), by pool name.
    pub max_instances_by_pool: Vec<(String, u32)>,
}

impl WorkersConfig {
    /// The most instances `pool` may run for this config: its own limit, else
    /// `max_concurrent_instances`.
    pub fn max_instances_for(&self, pool: &str) -> u32 {
        self.max_instances_by_pool
            .iter()
            .find(|(p, _)| p == pool)
            .map_or(self.max_concurrent_instances, |(_, n)| *n)
    }
}

/// How strict to be.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// Accept `file://` URLs and relative paths (tests and `--local`).
    pub allow_local_repos: bool,
    /// Overrides every repository's timeout (`--timeout-minutes`, `TIMEOUT_MINUTES`).
    pub timeout_override: Option<Duration>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Line 0 is the file as a whole (it could not be read): no line to point at.
        if self.line == 0 {
            return write!(f, "{}: {}", self.file.display(), self.message);
        }
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.field,
            self.message
        )
    }
}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a config file from disk.
pub fn load(path: &Path, opts: &ParseOptions) -> Result<WorkersConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            field: "file".to_string(),
            message: format!("cannot read {}: {e}", path.display()),
        }])
    })?;
    parse(path, &text, opts)
}

const TOP_FIELDS: &[&str] = &[
    "repositories",
    "default_timeout_minutes",
    "max_concurrent_instances",
    "max_instances_by_pool",
    "secrets",
    "model_api_url",
    "model",
    "report_status",
];
const REPO_FIELDS: &[&str] = &[
    "name",
    "organization",
    "prompt",
    "gpu_required",
    "timeout_minutes",
    "timeout",
    "instance_type",
    "pool",
    "url",
    "ref",
    "dockerfile",
    "smoke_command",
    "expected_errors",
    "agent_image",
    "tests",
    "tests_file",
    "gpu_must_be_used",
    "env",
    "builder",
    "target",
    "build_args",
    "build_secrets",
    "max_fix_attempts",
    "agent",
    "max_turns",
    "model_budget_usd",
    "model_api_url",
    "model",
    "publish",
    "report_status",
    "secrets",
];

/// A `secrets:` mapping of environment names to secret references, each checked.
fn secrets_map(c: &mut Checker<'_>, value: &Node, field: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match &value.value {
        Value::Map(pairs) => {
            for (k, v) in pairs {
                let Some(name) = k.as_str() else { continue };
                let fk = join(field, name);
                if let Err(e) = runpod::check_env_key(name) {
                    c.err(k.line, &fk, e);
                } else if let Some(text) = c.string(v, &fk) {
                    if c.check(v, &fk, parse_secret_ref(&text)).is_some() {
                        out.push((name.to_string(), text));
                    }
                }
            }
        }
        _ => c.err(
            value.line,
            field,
            format!(
                "must be a mapping of NAME: secretsmanager:janitor/… or ssm:/janitor/…, found {}",
                value.kind()
            ),
        ),
    }
    out
}

/// A multi-stage build's stage name, as the Dockerfile's `FROM … AS name` spells it.
pub fn check_target(s: &str) -> Result<(), String> {
    let ok = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a stage name (`FROM … AS name`: letters, digits, `_`, `-` and `.`, starting with a letter)"))
    }
}

struct Checker<'a> {
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn err(&mut self, line: usize, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// The mapping's entries with string keys; reports duplicates and unknown keys.
    fn entries<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Vec<(&'n str, &'n Node)> {
        let Value::Map(pairs) = &node.value else {
            self.err(
                node.line,
                path,
                format!("must be a mapping, found {}", node.kind()),
            );
            return Vec::new();
        };
        let mut out: Vec<(&str, &Node)> = Vec::new();
        for (k, v) in pairs {
            let Some(key) = k.as_str() else {
                self.err(k.line, path, "keys must be plain names");
                continue;
            };
            let field = join(path, key);
            if !allowed.contains(&key) {
                self.err(
                    k.line,
                    &field,
                    format!("unknown field; valid fields are: {}", allowed.join(", ")),
                );
                continue;
            }
            if out.iter().any(|(seen, _)| *seen == key) {
                self.err(k.line, &field, "given twice");
                continue;
            }
            out.push((key, v));
        }
        out
    }

    fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match node.as_str() {
            Some(s) if !node.is_null() && !s.trim().is_empty() => Some(s.to_string()),
            _ => {
                self.err(
                    node.line,
                    field,
                    format!("must be a non-empty string, found {}", node.kind()),
                );
                None
            }
        }
    }

    fn positive(&mut self, node: &Node, field: &str, max: i64) -> Option<u64> {
        match node.as_i64() {
            Some(n) if n >= 1 && n <= max => u64::try_from(n).ok(),
            _ => {
                self.err(
                    node.line,
                    field,
                    format!(
                        "must be a whole number from 1 to {max}, found `{}`",
                        node.as_str().unwrap_or(node.kind())
                    ),
                );
                None
            }
        }
    }

    fn check<T>(&mut self, node: &Node, field: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|m| self.err(node.line, field, m)).ok()
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Parses and validates config text; `path` is used in messages and to resolve relative local URLs.
pub fn parse(path: &Path, text: &str, opts: &ParseOptions) -> Result<WorkersConfig, ConfigErrors> {
    let mut c = Checker {
        file: path,
        errors: Vec::new(),
    };
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            c.err(
                1,
                "repositories",
                "the file is empty; list at least one repository",
            );
            return Err(ConfigErrors(c.errors));
        }
        Err(e) => {
            c.err(e.line, "yaml", format!("not valid YAML: {}", e.message));
            return Err(ConfigErrors(c.errors));
        }
    };
    let mut default_timeout = Duration::from_secs(DEFAULT_TIMEOUT_MINUTES * 60);
    let mut max_instances = DEFAULT_MAX_CONCURRENT_INSTANCES;
    let mut by_pool: Vec<(String, u32)> = Vec::new();
    let mut global_secrets: Vec<(String, String)> = Vec::new();
    let mut global_api_url: Option<String> = None;
    let mut global_model: Option<String> = None;
    let mut global_report_status = false;
    let repos_node = match &root.value {
        // `infra/repos.yaml` may be a plain list of `org/name` strings.
        Value::Seq(_) => Some(&root),
        Value::Map(_) => {
            let mut repos = None;
            for (key, value) in c.entries(&root, "", TOP_FIELDS) {
                match key {
                    "repositories" => repos = Some(value),
                    "default_timeout_minutes" => {
                        if let Some(m) = c.positive(value, key, (MAX_TIMEOUT.as_secs() / 60) as i64)
                        {
                            default_timeout = Duration::from_secs(m * 60);
                        }
                    }
                    "max_concurrent_instances" => {
                        if let Some(n) = c.positive(value, key, i64::from(MAX_INSTANCES_LIMIT)) {
                            max_instances = n as u32;
                        }
                    }
                    "max_instances_by_pool" => match &value.value {
                        Value::Map(pairs) => {
                            for (k, v) in pairs {
                                let Some(pool) = k.as_str() else { continue };
                                let fk = join(key, pool);
                                if let Err(e) = names::check_pool(pool) {
                                    c.err(k.line, &fk, e);
                                } else if let Some(n) =
                                    c.positive(v, &fk, i64::from(MAX_INSTANCES_LIMIT))
                                {
                                    by_pool.push((pool.to_string(), n as u32));
                                }
                            }
                        }
                        _ => c.err(
                            value.line,
                            key,
                            format!(
                                "must be a mapping of pool name to a number of instances (`gpu-48: 2`), found {}",
                                value.kind()
                            ),
                        ),
                    },
                    "secrets" => global_secrets = secrets_map(&mut c, value, key),
                    "model_api_url" => {
                        if let Some(s) = c.string(value, key) {
                            global_api_url =
                                c.check(value, key, check_model_api_url(&s).map(|()| s));
                        }
                    }
                    "model" => {
                        if let Some(s) = c.string(value, key) {
                            global_model = c.check(value, key, check_model(&s).map(|()| s));
                        }
                    }
                    "report_status" => match value.as_bool() {
                        Some(b) => global_report_status = b,
                        None => c.err(
                            value.line,
                            key,
                            format!("must be true or false, found {}", value.kind()),
                        ),
                    },
                    _ => {}
                }
            }
            if repos.is_none() {
                c.err(
                    root.line,
                    "repositories",
                    "missing; list the repositories to validate",
                );
            }
            repos
        }
        Value::Scalar { .. } => {
            c.err(root.line, "repositories", format!("the file must be a mapping with `repositories:` or a list of `org/name`, found {}", root.kind()));
            None
        }
    };
    let mut repositories = Vec::new();
    if let Some(node) = repos_node {
        match &node.value {
            Value::Seq(items) if items.is_empty() => c.err(
                node.line,
                "repositories",
                "is empty; list at least one repository",
            ),
            Value::Seq(items) => {
                // Names seen so far, case-insensitively: one lookup per entry keeps this linear.
                let mut seen = std::collections::HashSet::new();
                for (i, item) in items.iter().enumerate() {
                    let field = format!("repositories[{i}]");
                    if let Some(spec) =
                        repo_entry(&mut c, item, &field, default_timeout, path, opts)
                    {
                        if !seen.insert(spec.repo.full_name().to_ascii_lowercase()) {
                            c.err(
                                item.line,
                                &field,
                                format!("`{}` is listed twice", spec.repo.full_name()),
                            );
                        } else {
                            repositories.push(spec);
                        }
                    }
                }
            }
            _ => c.err(
                node.line,
                "repositories",
                format!("must be a list, found {}", node.kind()),
            ),
        }
    }
    if !c.errors.is_empty() {
        c.errors.sort_by_key(|e| e.line);
        return Err(ConfigErrors(c.errors));
    }
    // The file's secrets and model settings, under each repository's own.
    for spec in &mut repositories {
        if spec.agent.api_url.is_none() {
            spec.agent.api_url = global_api_url.clone();
        }
        if spec.agent.model.is_none() {
            spec.agent.model = global_model.clone();
        }
        spec.report_status.get_or_insert(global_report_status);
        for (name, reference) in &global_secrets {
            if !spec.secrets.iter().any(|(n, _)| n == name) {
                spec.secrets.push((name.clone(), reference.clone()));
            }
        }
    }
    Ok(WorkersConfig {
        path: path.to_path_buf(),
        repositories,
        default_timeout,
        max_concurrent_instances: max_instances,
        max_instances_by_pool: by_pool,
    })
}

fn repo_entry(
    c: &mut Checker<'_>,
    item: &Node,
    field: &str,
    default_timeout: Duration,
    path: &Path,
    opts: &ParseOptions,
) -> Option<JobSpec> {
    let errors_before = c.errors.len();
    let timeout = opts.timeout_override.unwrap_or(default_timeout);
    if let Some(s) = item.as_str().filter(|_| !item.is_null()) {
        let Some((org, name)) = s.split_once('/') else {
            c.err(
                item.line,
                field,
                format!("`{s}` must be written `organization/name`"),
            );
            return None;
        };
        let org = c.check(item, field, names::check_organization(org).map(|()| org));
        let name = c.check(item, field, names::check_repo_name(name).map(|()| name));
        return Some(JobSpec::new(
            RepoRef {
                organization: org?.to_string(),
                name: name?.to_string(),
                url: None,
                git_ref: None,
            },
            timeout,
        ));
    }
    let entries = c.entries(item, field, REPO_FIELDS);
    if entries.is_empty() && c.errors.len() > errors_before {
        return None;
    }
    let mut spec = JobSpec::new(
        RepoRef {
            organization: String::new(),
            name: String::new(),
            url: None,
            git_ref: None,
        },
        default_timeout,
    );
    let mut timeout_line = None;
    for (key, value) in &entries {
        let f = join(field, key);
        let f = f.as_str();
        match *key {
            "name" => {
                if let Some(s) = c.string(value, f) {
                    if c.check(value, f, names::check_repo_name(&s)).is_some() {
                        spec.repo.name = s;
                    }
                }
            }
            "organization" => {
                if let Some(s) = c.string(value, f) {
                    if c.check(value, f, names::check_organization(&s)).is_some() {
                        spec.repo.organization = s;
                    }
                }
            }
            "prompt" => {
                if let Some(s) = c.string(value, f) {
                    spec.prompt = s;
                }
            }
            "gpu_required" => match value.as_bool() {
                Some(b) => spec.gpu_required = b,
                None => c.err(value.line, f, format!("must be true or false, found {}", value.kind())),
            },
            "timeout_minutes" | "timeout" => {
                if let Some(line) = timeout_line {
                    c.err(value.line, f, format!("give either `timeout` or `timeout_minutes`, not both (the other is on line {line})"));
                    continue;
                }
                timeout_line = Some(value.line);
                let parsed = if *key == "timeout" {
                    c.string(value, f).and_then(|s| c.check(value, f, crate::duration::parse(&s)))
                } else {
                    c.positive(value, f, (MAX_TIMEOUT.as_secs() / 60) as i64)
                        .map(|m| Duration::from_secs(m * 60))
                };
                match parsed {
                    Some(d) if d.is_zero() || d > MAX_TIMEOUT => c.err(value.line, f, "must be more than 0s and at most 12h (SQS's visibility limit)"),
                    Some(d) => spec.timeout = d,
                    None => {}
                }
            }
            "instance_type" => {
                if let Some(s) = c.string(value, f) {
                    spec.instance_type = c.check(value, f, names::check_instance_type(&s).map(|()| s));
                }
            }
            "pool" => {
                if let Some(s) = c.string(value, f) {
                    spec.pool = c.check(value, f, names::check_pool(&s).map(|()| s));
                }
            }
            "url" => {
                if let Some(s) = c.string(value, f) {
                    let base = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
                    let base = base.map(|b| std::fs::canonicalize(b).unwrap_or_else(|_| b.to_path_buf()));
                    spec.repo.url = c
                        .check(value, f, names::check_url(&s, opts.allow_local_repos, base.as_deref()))
                        .map(|src| match src {
                            CloneSource::Remote(u) => u,
                            CloneSource::Local(p) => format!("file://{}", normalize(&p).display()),
                        });
                }
            }
            "ref" => {
                if let Some(s) = c.string(value, f) {
                    spec.repo.git_ref = c.check(value, f, names::check_ref(&s).map(|()| s));
                }
            }
            "dockerfile" => {
                if let Some(s) = c.string(value, f) {
                    spec.dockerfile = c.check(value, f, names::check_repo_path(&s).map(|()| s));
                }
            }
            "agent_image" => {
                if let Some(s) = c.string(value, f) {
                    spec.agent_image = c.check(value, f, names::check_image(&s).map(|()| s));
                }
            }
            "smoke_command" => match &value.value {
                Value::Seq(items) if !items.is_empty() => {
                    let argv: Vec<String> = items
                        .iter()
                        .enumerate()
                        .filter_map(|(i, n)| c.string(n, &format!("{f}[{i}]")))
                        .collect();
                    if argv.len() == items.len() {
                        spec.smoke_command = Some(argv);
                    }
                }
                _ => c.err(value.line, f, format!("must be a non-empty list of strings (an argv such as [\"python\", \"-c\", \"print(1)\"]), found {}", value.kind())),
            },
            "gpu_must_be_used" => match value.as_bool() {
                Some(b) => spec.gpu_must_be_used = b,
                None => c.err(value.line, f, format!("must be true or false, found {}", value.kind())),
            },
            "tests_file" => {
                if let Some(s) = c.string(value, f) {
                    spec.tests_file = c.check(value, f, names::check_repo_path(&s).map(|()| s));
                }
            }
            "tests" => match &value.value {
                Value::Seq(items) if !items.is_empty() => {
                    for (i, n) in items.iter().enumerate() {
                        let fi = format!("{f}[{i}]");
                        match runpod::test_case("", "", &n.to_json(), format!("test_{}", i + 1)) {
                            Ok(t) if spec.tests.iter().any(|seen| seen.name == t.name) => {
                                c.err(n.line, &fi, format!("the name `{}` is used by an earlier test", t.name));
                            }
                            Ok(t) => spec.tests.push(t),
                            Err(e) => c.err(n.line, &fi, e),
                        }
                    }
                }
                _ => c.err(value.line, f, format!("must be a non-empty list of tests ({{name, input, timeout (ms), expected_output}}), found {}", value.kind())),
            },
            "env" => match &value.value {
                Value::Map(pairs) => {
                    for (k, v) in pairs {
                        let Some(key) = k.as_str() else { continue };
                        let fk = format!("{f}.{key}");
                        if let Err(e) = runpod::check_env_key(key) {
                            c.err(k.line, &fk, e);
                        } else if let Some(text) = v.as_str().filter(|_| !v.is_null()) {
                            if text.strip_prefix("secret:") == Some(crate::audience::PUBLISH_TOKEN) {
                                c.err(v.line, &fk, format!("`{text}` asks for the token that publishes fixes: it is never given to the worker"));
                            }
                            spec.env.push((key.to_string(), text.to_string()));
                        } else {
                            c.err(v.line, &fk, format!("must be a string, found {}", v.kind()));
                        }
                    }
                }
                _ => c.err(value.line, f, format!("must be a mapping of NAME: value, found {}", value.kind())),
            },
            "secrets" => {
                for (name, reference) in secrets_map(c, value, f) {
                    spec.secrets.retain(|(n, _)| *n != name);
                    spec.secrets.push((name, reference));
                }
            }
            "publish" => match value.as_bool() {
                Some(b) => spec.publish = b,
                None => c.err(value.line, f, format!("must be true or false, found {}", value.kind())),
            },
            "report_status" => match value.as_bool() {
                Some(b) => spec.report_status = Some(b),
                None => c.err(value.line, f, format!("must be true or false, found {}", value.kind())),
            },
            "max_fix_attempts" => {
                if let Some(n) = c.positive(value, f, i64::from(MAX_FIX_ATTEMPTS)) {
                    spec.max_fix_attempts = u32::try_from(n).unwrap_or(DEFAULT_MAX_FIX_ATTEMPTS);
                }
            }
            "agent" => {
                if let Some(s) = c.string(value, f) {
                    spec.agent.asked = true;
                    match s.as_str() {
                        "on_failure" => spec.agent.mode = AgentMode::OnFailure,
                        "always" => spec.agent.mode = AgentMode::Always,
                        "never" => spec.agent.mode = AgentMode::Never,
                        other => c.err(value.line, f, format!("must be `on_failure` (the default: the agent fixes a failed validation), `always` (it also carries out the prompt on a passing repository) or `never`, found `{other}`")),
                    }
                }
            }
            "max_turns" => {
                if let Some(n) = c.positive(value, f, i64::from(MAX_TURNS)) {
                    spec.agent.max_turns = u32::try_from(n).unwrap_or(DEFAULT_MAX_TURNS);
                }
            }
            "model_api_url" => {
                if let Some(s) = c.string(value, f) {
                    spec.agent.api_url = c.check(value, f, check_model_api_url(&s).map(|()| s));
                }
            }
            "model" => {
                if let Some(s) = c.string(value, f) {
                    spec.agent.model = c.check(value, f, check_model(&s).map(|()| s));
                }
            }
            "model_budget_usd" => {
                if let Some(s) = c.string(value, f) {
                    if let Some(cents) = c.check(value, f, parse_budget(&s)) {
                        spec.agent.budget_cents = cents;
                    }
                }
            }
            "builder" => {
                if let Some(s) = c.string(value, f) {
                    match s.as_str() {
                        "buildkit" => spec.build.builder = Builder::Buildkit,
                        "classic" => spec.build.builder = Builder::Classic,
                        other => c.err(value.line, f, format!("must be `buildkit` (the default) or `classic`, found `{other}`")),
                    }
                }
            }
            "target" => {
                if let Some(s) = c.string(value, f) {
                    spec.build.target = c.check(value, f, check_target(&s).map(|()| s));
                }
            }
            "build_args" => match &value.value {
                Value::Map(pairs) => {
                    for (k, v) in pairs {
                        let Some(key) = k.as_str() else { continue };
                        let fk = format!("{f}.{key}");
                        if let Err(e) = runpod::check_env_key(key) {
                            c.err(k.line, &fk, e.replace("an environment variable", "a build argument"));
                        } else if let Some(text) = v.as_str().filter(|_| !v.is_null()) {
                            spec.build.args.push((key.to_string(), text.to_string()));
                        } else {
                            c.err(v.line, &fk, format!("must be a string, found {}", v.kind()));
                        }
                    }
                }
                _ => c.err(value.line, f, format!("must be a mapping of NAME: value, found {}", value.kind())),
            },
            "build_secrets" => match &value.value {
                Value::Seq(items) => {
                    for (i, n) in items.iter().enumerate() {
                        let fi = format!("{f}[{i}]");
                        if let Some(s) = c.string(n, &fi) {
                            if spec.build.secrets.contains(&s) {
                                c.err(n.line, &fi, format!("`{s}` is listed twice"));
                            } else if s == crate::audience::PUBLISH_TOKEN {
                                c.err(n.line, &fi, format!("`{s}` is the token that publishes fixes: it is never given to a build; name another secret for what the build needs"));
                            } else if c.check(n, &fi, names::check_secret_id(&s)).is_some() {
                                spec.build.secrets.push(s);
                            }
                        }
                    }
                }
                _ => c.err(value.line, f, format!("must be a list of secret ids (such as [HF_TOKEN]), found {}", value.kind())),
            },
            "expected_errors" => match &value.value {
                Value::Seq(items) => {
                    for (i, n) in items.iter().enumerate() {
                        let fi = format!("{f}[{i}]");
                        if let Some(s) = c.string(n, &fi) {
                            if let Err(e) = regex::Regex::new(&s) {
                                c.err(n.line, &fi, format!("not a valid regular expression: {}", e.to_string().lines().last().unwrap_or("invalid")));
                            } else {
                                spec.expected_errors.push(s);
                            }
                        }
                    }
                }
                _ => c.err(value.line, f, format!("must be a list of regular expressions, found {}", value.kind())),
            },
            _ => {}
        }
    }
    for required in ["name", "organization"] {
        if !entries.iter().any(|(k, _)| *k == required) {
            c.err(
                item.line,
                &join(field, required),
                "missing; every repository needs `name` and `organization`",
            );
        }
    }
    if let Some(t) = opts.timeout_override {
        spec.timeout = t;
    }
    (c.errors.len() == errors_before).then_some(spec)
}

/// Removes `.` components so `file://` URLs read cleanly.
fn normalize(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(Path::new("cfg.yaml"), text, &ParseOptions::default())
            .err()
            .map(|e| e.0.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    /// `check(input, expected)`: the config must fail with exactly these lines, in order.
    fn check(text: &str, expected: &[&str]) {
        assert_eq!(errors(text), expected, "for:\n{text}");
    }

    #[test]
    fn a_limit_per_pool_is_read_and_a_bad_one_named() {
        let cfg = parse(
            Path::new("c.yaml"),
            "repositories: [a/b]\nmax_concurrent_instances: 6\nmax_instances_by_pool:\n  gpu-48: 2\n",
            &ParseOptions::default(),
        )
        .unwrap();
        assert_eq!(cfg.max_instances_for("gpu-48"), 2);
        assert_eq!(cfg.max_instances_for("cpu"), 6);
        let errors = parse(
            Path::new("c.yaml"),
            "repositories: [a/b]\nmax_instances_by_pool:\n  GPU_48: 2\n  cpu: 0\n",
            &ParseOptions::default(),
        )
        .unwrap_err();
        let text: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "c.yaml:3: max_instances_by_pool.GPU_48: `GPU_48` is not a pool name: 1 to 20 lowercase letters, digits or `-`, starting with a letter (such as `gpu-48`)",
                "c.yaml:4: max_instances_by_pool.cpu: must be a whole number from 1 to 100, found `0`",
            ]
        );
    }

    #[test]
    fn seed_example_parses() {
        let text = "repositories:\n  - name: worker-basic\n    organization: runpod-workers\n    prompt: \"validate\"\n    gpu_required: true\n    timeout_minutes: 30\n    instance_type: g5.xlarge\n  - name: worker-sdxl\n    organization: runpod-workers\n    prompt: p\n    gpu_required: false\n    timeout: 90s\ndefault_timeout_minutes: 20\nmax_concurrent_instances: 4\n";
        let cfg = parse(Path::new("x.yaml"), text, &ParseOptions::default()).unwrap();
        assert_eq!(cfg.repositories.len(), 2);
        assert_eq!(cfg.max_concurrent_instances, 4);
        assert_eq!(cfg.repositories[0].timeout, Duration::from_secs(1800));
        assert_eq!(cfg.repositories[1].timeout, Duration::from_secs(90));
        assert!(!cfg.repositories[1].gpu_required);
        assert_eq!(
            cfg.repositories[0].instance_type.as_deref(),
            Some("g5.xlarge")
        );
    }

    #[test]
    fn tests_env_and_gpu_use() {
        let text = "repositories:\n  - name: w\n    organization: o\n    gpu_must_be_used: false\n    tests_file: ci/tests.json\n    env:\n      MODEL_NAME: m\n    tests:\n      - name: hello\n        input: {prompt: hi, n: 2}\n        timeout: 10000\n        expected_output: {text: hi}\n";
        let cfg = parse(Path::new("x.yaml"), text, &ParseOptions::default()).unwrap();
        let r = &cfg.repositories[0];
        assert!(!r.gpu_must_be_used);
        assert_eq!(r.tests_file.as_deref(), Some("ci/tests.json"));
        assert_eq!(r.env, [("MODEL_NAME".to_string(), "m".to_string())]);
        assert_eq!(
            r.tests[0].input,
            serde_json::json!({"prompt": "hi", "n": 2})
        );
        assert_eq!(r.tests[0].timeout_ms, Some(10000));
        check(
            "repositories:\n  - name: w\n    organization: o\n    tests:\n      - name: a\n      - name: b\n        input: {}\n        timeout: 10s\n    env:\n      1BAD: x\n      OK: [1]\n    tests_file: ../x\n",
            &[
                "cfg.yaml:5: repositories[0].tests[0]: input: missing; every test needs the job input it sends",
                "cfg.yaml:6: repositories[0].tests[1]: timeout: must be a positive whole number of milliseconds, found \"10s\"",
                "cfg.yaml:10: repositories[0].env.1BAD: `1BAD` is not an environment variable name (letters, digits and _, not starting with a digit)",
                "cfg.yaml:11: repositories[0].env.OK: must be a string, found a list",
                "cfg.yaml:12: repositories[0].tests_file: `../x` must stay inside the repository (no `..`)",
            ],
        );
    }

    #[test]
    fn agent_mode_turns_and_budget() {
        let text = "repositories:\n  - name: w\n    organization: o\n    agent: always\n    max_turns: 12\n    model_budget_usd: 2.50\n";
        let cfg = parse(Path::new("a.yaml"), text, &ParseOptions::default()).unwrap();
        let a = &cfg.repositories[0].agent;
        assert_eq!(
            (a.mode, a.max_turns, a.budget_cents),
            (AgentMode::Always, 12, 250)
        );
        let bad = "repositories:\n  - name: w\n    organization: o\n    agent: sometimes\n    max_turns: 0\n    model_budget_usd: lots\n";
        let shown = parse(Path::new("a.yaml"), bad, &ParseOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            shown.contains("a.yaml:4: repositories[0].agent: must be `on_failure`"),
            "{shown}"
        );
        assert!(
            shown.contains("a.yaml:5: repositories[0].max_turns:"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "a.yaml:6: repositories[0].model_budget_usd: must be an amount in US dollars"
            ),
            "{shown}"
        );
        assert_eq!(
            parse_budget("0.004").unwrap_err(),
            "must be from 0.01 to 100, found 0.004"
        );
    }

    #[test]
    fn the_publish_token_is_refused_for_the_build_and_the_worker() {
        let text = "repositories:\n  - name: w\n    organization: o\n    build_secrets: [GITHUB_TOKEN]\n    env:\n      T: secret:GITHUB_TOKEN\n";
        let errors = parse(Path::new("w.yaml"), text, &ParseOptions::default()).unwrap_err();
        let shown = errors.to_string();
        assert!(
            shown.contains("w.yaml:4: repositories[0].build_secrets[0]: `GITHUB_TOKEN` is the token that publishes fixes"),
            "{shown}"
        );
        assert!(
            shown.contains("w.yaml:6: repositories[0].env.T: `secret:GITHUB_TOKEN` asks for the token that publishes fixes"),
            "{shown}"
        );
    }

    #[test]
    fn build_options() {
        let text = "repositories:\n  - name: w\n    organization: o\n    builder: classic\n    target: runtime\n    build_args:\n      PY: '3.11'\n    build_secrets: [HF_TOKEN]\n";
        let cfg = parse(Path::new("x.yaml"), text, &ParseOptions::default()).unwrap();
        let b = &cfg.repositories[0].build;
        assert_eq!(b.builder, Builder::Classic);
        assert_eq!(b.target.as_deref(), Some("runtime"));
        assert_eq!(b.args, [("PY".to_string(), "3.11".to_string())]);
        assert_eq!(b.secrets, ["HF_TOKEN"]);
        let plain = parse(Path::new("x.yaml"), "- o/w\n", &ParseOptions::default()).unwrap();
        assert_eq!(plain.repositories[0].build, BuildOptions::default());
        check(
            "repositories:\n  - name: w\n    organization: o\n    builder: kaniko\n    target: 2nd\n    build_args:\n      A-B: x\n    build_secrets: [HF_TOKEN, HF_TOKEN, ../x]\n",
            &[
                "cfg.yaml:4: repositories[0].builder: must be `buildkit` (the default) or `classic`, found `kaniko`",
                "cfg.yaml:5: repositories[0].target: `2nd` is not a stage name (`FROM … AS name`: letters, digits, `_`, `-` and `.`, starting with a letter)",
                "cfg.yaml:7: repositories[0].build_args.A-B: `A-B` is not a build argument name (letters, digits and _, not starting with a digit)",
                "cfg.yaml:8: repositories[0].build_secrets[1]: `HF_TOKEN` is listed twice",
                "cfg.yaml:8: repositories[0].build_secrets[2]: `../x` is not a secret id (1 to 128 letters, digits, `_`, `-` and `.`, not starting with `.`)",
            ],
        );
    }

    #[test]
    fn secrets_global_and_per_repository() {
        let text = "secrets:\n  ANTHROPIC_API_KEY: secretsmanager:janitor/anthropic\n  GITHUB_TOKEN: ssm:/janitor/github-token\nrepositories:\n  - name: w\n    organization: o\n    secrets:\n      GITHUB_TOKEN: ssm:/janitor/other-token\n  - name: v\n    organization: o\n";
        let cfg = parse(Path::new("x.yaml"), text, &ParseOptions::default()).unwrap();
        let w = &cfg.repositories[0].secrets;
        assert_eq!(w.len(), 2);
        assert!(w.contains(&(
            "GITHUB_TOKEN".to_string(),
            "ssm:/janitor/other-token".to_string()
        )));
        assert!(w.contains(&(
            "ANTHROPIC_API_KEY".to_string(),
            "secretsmanager:janitor/anthropic".to_string()
        )));
        assert!(cfg.repositories[1].secrets.contains(&(
            "GITHUB_TOKEN".to_string(),
            "ssm:/janitor/github-token".to_string()
        )));
        check(
            "secrets:\n  A: secretsmanager:prod/db\nrepositories:\n  - name: w\n    organization: o\n    secrets:\n      B: vault:x\n      1C: ssm:/janitor/c\n",
            &[
                "cfg.yaml:2: secrets.A: `secretsmanager:prod/db` is outside the janitor/ names the instance role may read; write `secretsmanager:janitor/NAME` or `ssm:/janitor/NAME`",
                "cfg.yaml:7: repositories[0].secrets.B: `vault:x` is not a secret reference; write `secretsmanager:janitor/NAME` or `ssm:/janitor/NAME`",
                "cfg.yaml:8: repositories[0].secrets.1C: `1C` is not an environment variable name (letters, digits and _, not starting with a digit)",
            ],
        );
    }

    #[test]
    fn plain_list_form() {
        let cfg = parse(
            Path::new("repos.yaml"),
            "- runpod-workers/worker-basic\n- runpod-workers/worker-sdxl\n",
            &ParseOptions::default(),
        )
        .unwrap();
        assert_eq!(
            cfg.repositories[1].repo.full_name(),
            "runpod-workers/worker-sdxl"
        );
        assert_eq!(cfg.repositories[0].prompt, DEFAULT_PROMPT);
        assert_eq!(cfg.default_timeout, Duration::from_secs(1800));
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        check(
            "repositories:\n  - name: bad name\n    organization: -org\n    gpu_required: maybe\n    timeout: 5\n    smoke_command: echo\n    expected_errors: ['(']\n    colour: red\n  - org/x\n  - justname\nmax_concurrent_instances: 0\n",
            &[
                "cfg.yaml:2: repositories[0].name: `bad name` is not a GitHub repository name: use letters, digits, `.`, `_` and `-`",
                "cfg.yaml:3: repositories[0].organization: `-org` is not a GitHub organization name: use letters, digits and single hyphens, not at the start or end",
                "cfg.yaml:4: repositories[0].gpu_required: must be true or false, found a string",
                "cfg.yaml:5: repositories[0].timeout: `5` has no unit; write it like `90s`, `20m` or `1h30m`",
                "cfg.yaml:6: repositories[0].smoke_command: must be a non-empty list of strings (an argv such as [\"python\", \"-c\", \"print(1)\"]), found a string",
                "cfg.yaml:7: repositories[0].expected_errors[0]: not a valid regular expression: error: unclosed group",
                "cfg.yaml:8: repositories[0].colour: unknown field; valid fields are: name, organization, prompt, gpu_required, timeout_minutes, timeout, instance_type, pool, url, ref, dockerfile, smoke_command, expected_errors, agent_image, tests, tests_file, gpu_must_be_used, env, builder, target, build_args, build_secrets, max_fix_attempts, agent, max_turns, model_budget_usd, model_api_url, model, publish, report_status, secrets",
                "cfg.yaml:10: repositories[2]: `justname` must be written `organization/name`",
                "cfg.yaml:11: max_concurrent_instances: must be a whole number from 1 to 100, found `0`",
            ],
        );
    }

    #[test]
    fn structural_problems() {
        check(
            "",
            &["cfg.yaml:1: repositories: the file is empty; list at least one repository"],
        );
        check(
            "repositories: []\n",
            &["cfg.yaml:1: repositories: is empty; list at least one repository"],
        );
        check(
            "default_timeout_minutes: 5\n",
            &["cfg.yaml:1: repositories: missing; list the repositories to validate"],
        );
        check("repositories:\n  - name: a\n", &["cfg.yaml:2: repositories[0].organization: missing; every repository needs `name` and `organization`"]);
        check(
            "repositories:\n  - {name: a, organization: o, timeout: 1m, timeout_minutes: 3}\n",
            &["cfg.yaml:2: repositories[0].timeout_minutes: give either `timeout` or `timeout_minutes`, not both (the other is on line 2)"],
        );
        check(
            "repositories:\n  - o/a\n  - O/A\n",
            &["cfg.yaml:3: repositories[1]: `O/A` is listed twice"],
        );
        check("repositories:\n  - {name: a, organization: o, timeout: 13h}\n", &["cfg.yaml:2: repositories[0].timeout: must be more than 0s and at most 12h (SQS's visibility limit)"]);
        let e = errors("repositories:\n  - name: [\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("cfg.yaml:") && e[0].contains("yaml: not valid YAML"),
            "{e:?}"
        );
    }

    #[test]
    fn an_unreadable_file_names_the_path_and_the_reason() {
        let e = load(Path::new("/no/such/workers.yaml"), &ParseOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/no/such/workers.yaml: cannot read /no/such/workers.yaml: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn local_urls_need_permission() {
        let text = "repositories:\n  - {name: a, organization: o, url: 'file:///srv/a'}\n";
        check(text, &["cfg.yaml:2: repositories[0].url: `file:///srv/a` is a local repository, refused unless local repositories are allowed (janitorctl --allow-local-repos, janitord --allow-local-repos, or `run --local`)"]);
        let opts = ParseOptions {
            allow_local_repos: true,
            timeout_override: Some(Duration::from_secs(60)),
        };
        let cfg = parse(
            Path::new("/cfg/x.yaml"),
            "repositories:\n  - {name: a, organization: o, url: ./repos/a, timeout: 5m}\n",
            &opts,
        )
        .unwrap();
        assert_eq!(
            cfg.repositories[0].repo.url.as_deref(),
            Some("file:///cfg/repos/a")
        );
        assert_eq!(cfg.repositories[0].timeout, Duration::from_secs(60));
    }
}
