//! The SQS message body: versioned JSON describing one repository job, and its strict decoding.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{self, BuildOptions, Builder, JobSpec, RepoRef, MAX_TIMEOUT};
use crate::names;
use crate::runpod::{self, TestCase};

/// The message schema this build writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

/// The wire form of a job. `timeout` is in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    pub schema: u32,
    pub job_id: String,
    pub run_id: String,
    pub repo: RepoRef,
    pub prompt: String,
    pub gpu_required: bool,
    pub timeout: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestCase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests_file: Option<String>,
    /// Absent means true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_must_be_used: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// Absent means BuildKit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<Builder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_args: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_secrets: Vec<String>,
    /// Absent means 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fix_attempts: Option<u32>,
    /// Absent means `on_failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_mode: Option<config::AgentMode>,
    /// Absent means 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Absent means 500 (five dollars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_budget_cents: Option<u32>,
    /// Absent means the agent's default endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_api_url: Option<String>,
    /// Absent means the agent's default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Absent means true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<bool>,
    /// Absent means false: no commit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_status: Option<bool>,
    /// `[name, reference]` pairs: where each secret is kept, never its value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<(String, String)>,
    #[serde(with = "time::serde::rfc3339")]
    pub enqueued_at: OffsetDateTime,
}

/// A decoded, validated job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub job_id: String,
    pub run_id: String,
    pub spec: JobSpec,
    pub enqueued_at: OffsetDateTime,
}

/// Why a message was refused. The ids are kept when they could be read, so the refusal can be
/// recorded where the run's reports live.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    pub reason: String,
    pub job_id: Option<String>,
    pub run_id: Option<String>,
}

impl JobMessage {
    /// Builds the message for one config entry.
    pub fn new(
        job_id: String,
        run_id: String,
        spec: &JobSpec,
        enqueued_at: OffsetDateTime,
    ) -> Self {
        JobMessage {
            schema: SCHEMA_VERSION,
            job_id,
            run_id,
            repo: spec.repo.clone(),
            prompt: spec.prompt.clone(),
            gpu_required: spec.gpu_required,
            timeout: spec.timeout.as_secs(),
            instance_type: spec.instance_type.clone(),
            dockerfile: spec.dockerfile.clone(),
            smoke_command: spec.smoke_command.clone(),
            expected_errors: spec.expected_errors.clone(),
            agent_image: spec.agent_image.clone(),
            tests: spec.tests.clone(),
            tests_file: spec.tests_file.clone(),
            gpu_must_be_used: (!spec.gpu_must_be_used).then_some(false),
            env: spec.env.clone(),
            builder: (spec.build.builder != Builder::Buildkit).then_some(spec.build.builder),
            target: spec.build.target.clone(),
            build_args: spec.build.args.clone(),
            build_secrets: spec.build.secrets.clone(),
            max_fix_attempts: (spec.max_fix_attempts != config::DEFAULT_MAX_FIX_ATTEMPTS)
                .then_some(spec.max_fix_attempts),
            agent_mode: (spec.agent.mode != config::AgentMode::OnFailure)
                .then_some(spec.agent.mode),
            max_turns: (spec.agent.max_turns != config::DEFAULT_MAX_TURNS)
                .then_some(spec.agent.max_turns),
            model_budget_cents: (spec.agent.budget_cents != config::DEFAULT_MODEL_BUDGET_CENTS)
                .then_some(spec.agent.budget_cents),
            model_api_url: spec.agent.api_url.clone(),
            model: spec.agent.model.clone(),
            publish: (!spec.publish).then_some(false),
            report_status: (spec.report_status == Some(true)).then_some(true),
            secrets: spec.secrets.clone(),
            enqueued_at,
        }
    }
}

/// Decodes and validates a message body. Everything a config file is checked for is checked
/// again here: the queue may be written by something other than `janitorctl`.
pub fn decode(body: &str, allow_local_repos: bool) -> Result<Job, Rejection> {
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| Rejection {
        reason: format!("body is not JSON: {e}"),
        job_id: None,
        run_id: None,
    })?;
    let id = |k: &str| {
        value
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|s| names::check_id(s).is_ok())
            .map(str::to_string)
    };
    let reject = |reason: String| Rejection {
        reason,
        job_id: id("job_id"),
        run_id: id("run_id"),
    };
    match value.get("schema").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(reject(format!(
                "unsupported schema version {v}; this janitord understands version {SCHEMA_VERSION}"
            )))
        }
        None => {
            return Err(reject(format!(
                "field `schema` is missing or not a number; expected {SCHEMA_VERSION}"
            )))
        }
    }
    // serde reads a struct from a sequence too (`"repo": ["a", "b"]` would become organization
    // `a`, name `b`): every object-typed field must be an object.
    for field in OBJECT_FIELDS {
        if let Some(v) = value.get(field).filter(|v| !v.is_object()) {
            return Err(reject(format!(
                "field `{field}` must be an object ({{\"organization\": …, \"name\": …}}), got {}",
                json_kind(v)
            )));
        }
    }
    let msg: JobMessage =
        serde_json::from_value(value.clone()).map_err(|e| reject(format!("malformed job: {e}")))?;
    let mut problems = Vec::new();
    let mut note = |field: &str, r: Result<(), String>| {
        if let Err(e) = r {
            problems.push(format!("{field}: {e}"));
        }
    };
    note("job_id", names::check_id(&msg.job_id));
    note("run_id", names::check_id(&msg.run_id));
    note(
        "repo.organization",
        names::check_organization(&msg.repo.organization),
    );
    note("repo.name", names::check_repo_name(&msg.repo.name));
    if let Some(url) = &msg.repo.url {
        note(
            "repo.url",
            names::check_url(url, allow_local_repos, None).map(|_| ()),
        );
    }
    if let Some(r) = &msg.repo.git_ref {
        note("repo.ref", names::check_ref(r));
    }
    if let Some(d) = &msg.dockerfile {
        note("dockerfile", names::check_repo_path(d));
    }
    if let Some(i) = &msg.agent_image {
        note("agent_image", names::check_image(i));
    }
    if let Some(t) = &msg.instance_type {
        note("instance_type", names::check_instance_type(t));
    }
    if msg.timeout == 0 || msg.timeout > MAX_TIMEOUT.as_secs() {
        note(
            "timeout",
            Err(format!(
                "{} seconds is outside 1..={}",
                msg.timeout,
                MAX_TIMEOUT.as_secs()
            )),
        );
    }
    if msg.smoke_command.as_ref().is_some_and(Vec::is_empty) {
        note(
            "smoke_command",
            Err("must not be an empty list".to_string()),
        );
    }
    for (i, e) in msg.expected_errors.iter().enumerate() {
        note(
            &format!("expected_errors[{i}]"),
            regex::Regex::new(e).map(|_| ()).map_err(|e| e.to_string()),
        );
    }
    if let Some(f) = &msg.tests_file {
        note("tests_file", names::check_repo_path(f));
    }
    for (i, t) in msg.tests.iter().enumerate() {
        if t.name.trim().is_empty() {
            note(
                &format!("tests[{i}].name"),
                Err("must not be empty".to_string()),
            );
        }
        if !t.input.is_object() {
            note(
                &format!("tests[{i}].input"),
                Err("must be an object".to_string()),
            );
        }
    }
    for (i, (key, _)) in msg.env.iter().enumerate() {
        note(&format!("env[{i}]"), runpod::check_env_key(key));
    }
    if let Some(t) = &msg.target {
        note("target", config::check_target(t));
    }
    for (i, (key, _)) in msg.build_args.iter().enumerate() {
        note(&format!("build_args[{i}]"), runpod::check_env_key(key));
    }
    if let Some(n) = msg.max_fix_attempts {
        if n == 0 || n > config::MAX_FIX_ATTEMPTS {
            note(
                "max_fix_attempts",
                Err(format!(
                    "must be from 1 to {}, found {n}",
                    config::MAX_FIX_ATTEMPTS
                )),
            );
        }
    }
    if let Some(n) = msg.max_turns {
        if n == 0 || n > config::MAX_TURNS {
            note(
                "max_turns",
                Err(format!(
                    "must be from 1 to {}, found {n}",
                    config::MAX_TURNS
                )),
            );
        }
    }
    if let Some(n) = msg.model_budget_cents {
        if n == 0 || n > config::MAX_MODEL_BUDGET_CENTS {
            note(
                "model_budget_cents",
                Err(format!(
                    "must be from 1 to {}, found {n}",
                    config::MAX_MODEL_BUDGET_CENTS
                )),
            );
        }
    }
    if let Some(u) = &msg.model_api_url {
        note("model_api_url", config::check_model_api_url(u));
    }
    if let Some(m) = &msg.model {
        note("model", config::check_model(m));
    }
    for (i, (name, reference)) in msg.secrets.iter().enumerate() {
        note(&format!("secrets[{i}]"), runpod::check_env_key(name));
        note(
            &format!("secrets[{i}]"),
            config::parse_secret_ref(reference).map(|_| ()),
        );
    }
    for (i, id) in msg.build_secrets.iter().enumerate() {
        note(&format!("build_secrets[{i}]"), names::check_secret_id(id));
    }
    if !problems.is_empty() {
        return Err(reject(format!("invalid job: {}", problems.join("; "))));
    }
    Ok(Job {
        job_id: msg.job_id,
        run_id: msg.run_id,
        enqueued_at: msg.enqueued_at,
        spec: JobSpec {
            repo: msg.repo,
            prompt: msg.prompt,
            gpu_required: msg.gpu_required,
            timeout: Duration::from_secs(msg.timeout),
            instance_type: msg.instance_type,
            // The queue it came from is the pool.
            pool: None,
            dockerfile: msg.dockerfile,
            smoke_command: msg.smoke_command,
            expected_errors: msg.expected_errors,
            agent_image: msg.agent_image,
            tests: msg.tests,
            tests_file: msg.tests_file,
            gpu_must_be_used: msg.gpu_must_be_used.unwrap_or(true),
            env: msg.env,
            build: BuildOptions {
                builder: msg.builder.unwrap_or_default(),
                target: msg.target,
                args: msg.build_args,
                secrets: msg.build_secrets,
            },
            max_fix_attempts: msg
                .max_fix_attempts
                .unwrap_or(config::DEFAULT_MAX_FIX_ATTEMPTS),
            agent: config::AgentOptions {
                mode: msg.agent_mode.unwrap_or_default(),
                asked: msg.agent_mode.is_some(),
                max_turns: msg.max_turns.unwrap_or(config::DEFAULT_MAX_TURNS),
                budget_cents: msg
                    .model_budget_cents
                    .unwrap_or(config::DEFAULT_MODEL_BUDGET_CENTS),
                api_url: msg.model_api_url,
                model: msg.model,
            },
            publish: msg.publish.unwrap_or(true),
            report_status: msg.report_status,
            secrets: msg.secrets,
        },
    })
}

/// The message's fields that hold an object.
const OBJECT_FIELDS: &[&str] = &["repo"];

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JobMessage {
        let spec = JobSpec {
            repo: RepoRef {
                organization: "runpod-workers".into(),
                name: "worker-basic".into(),
                url: None,
                git_ref: None,
            },
            prompt: "p".into(),
            gpu_required: false,
            timeout: Duration::from_secs(60),
            instance_type: None,
            pool: None,
            dockerfile: None,
            smoke_command: Some(vec!["true".into()]),
            expected_errors: vec!["ERROR: fine".into()],
            agent_image: None,
            tests: vec![TestCase {
                name: "t".into(),
                input: serde_json::json!({"a": 1}),
                timeout_ms: Some(5000),
                expected_output: None,
                expectation_advisory: false,
            }],
            tests_file: None,
            gpu_must_be_used: false,
            build: BuildOptions {
                builder: Builder::Classic,
                target: Some("runtime".into()),
                args: vec![("PY".into(), "3.11".into())],
                secrets: vec!["HF_TOKEN".into()],
            },
            max_fix_attempts: 2,
            agent: sample_agent(),
            publish: false,
            report_status: Some(true),
            secrets: vec![("GITHUB_TOKEN".into(), "ssm:/janitor/github-token".into())],
            env: vec![("K".into(), "v".into())],
        };
        JobMessage::new("j1".into(), "r1".into(), &spec, OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn round_trip() {
        let body = serde_json::to_string(&sample()).unwrap();
        let job = decode(&body, false).unwrap();
        assert_eq!(job.spec.smoke_command, Some(vec!["true".to_string()]));
        assert_eq!(job.job_id, "j1");
        assert_eq!(job.spec.tests[0].timeout_ms, Some(5000));
        assert!(!job.spec.gpu_must_be_used);
        assert_eq!(job.spec.env, [("K".to_string(), "v".to_string())]);
        assert_eq!(
            job.spec.agent,
            sample_agent(),
            "the agent's options travel whole"
        );
        let mut v = serde_json::to_value(sample()).unwrap();
        v["model_api_url"] = "http://10.0.0.9/steal".into();
        check(
            &v.to_string(),
            "model_api_url: `http://10.0.0.9/steal` is not a model API URL",
        );
    }

    fn sample_agent() -> crate::config::AgentOptions {
        crate::config::AgentOptions {
            mode: crate::config::AgentMode::Always,
            max_turns: 12,
            budget_cents: 250,
            api_url: Some("https://llm-gateway.example/v1".into()),
            model: Some("claude-sonnet-4-5".into()),
            asked: true,
        }
    }

    /// `check(body, expected)`: the body is rejected with a reason containing `expected`.
    fn check(body: &str, expected: &str) {
        let r = decode(body, false).unwrap_err();
        assert!(r.reason.contains(expected), "{body}: got `{}`", r.reason);
    }

    #[test]
    fn rejections_say_why() {
        let mut v = serde_json::to_value(sample()).unwrap();
        check("not json", "body is not JSON");
        check("{}", "field `schema` is missing");
        v["schema"] = 2.into();
        check(&v.to_string(), "unsupported schema version 2");
        v["schema"] = 1.into();
        v["surprise"] = true.into();
        check(&v.to_string(), "unknown field `surprise`");
        v.as_object_mut().unwrap().remove("surprise");
        let mut seq = v.clone();
        seq["repo"] = serde_json::json!(["a", "b"]);
        check(&seq.to_string(), "field `repo` must be an object");
        check(&seq.to_string(), "got an array");
        seq["repo"] = "a/b".into();
        check(&seq.to_string(), "got a string");
        check("[1, \"r\"]", "field `schema` is missing");
        v["repo"]["url"] = "file:///etc".into();
        check(
            &v.to_string(),
            "repo.url: `file:///etc` is a local repository",
        );
        v["repo"]["url"] = serde_json::Value::Null;
        v["timeout"] = 0.into();
        v["job_id"] = "../../x".into();
        let r = decode(&v.to_string(), false).unwrap_err();
        assert!(
            r.reason.contains("job_id:") && r.reason.contains("timeout:"),
            "{}",
            r.reason
        );
        assert_eq!(r.job_id, None);
        assert_eq!(r.run_id.as_deref(), Some("r1"));
    }
}
