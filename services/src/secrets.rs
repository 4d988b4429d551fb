//! Job secrets, fetched when a job starts from AWS Secrets Manager (`GetSecretValue`) or SSM
//! Parameter Store (`GetParameter` with decryption), and held only in memory: `SecretValues`
//! never prints a value, and redacts them from any text.

use std::future::Future;

use janitor_model::config::{parse_secret_ref, SecretRef};

use crate::error::{ErrorKind, ServiceError};

/// Values shorter than this are not redacted (they would blank out ordinary text); every
/// real token is longer.
pub const MIN_REDACTED_LEN: usize = 4;

/// A job's secrets: environment name → value.
#[derive(Clone, Default)]
pub struct SecretValues(Vec<(String, String)>);

impl std::fmt::Debug for SecretValues {
    /// Names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

impl SecretValues {
    pub fn new(values: Vec<(String, String)>) -> Self {
        SecretValues(values)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `NAME=value` for a container's environment, only for the names `allowed` says may see them.
    pub fn env_for(&self, allowed: impl Fn(&str) -> bool) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| allowed(n))
            .map(|(n, v)| format!("{n}={v}"))
            .collect()
    }

    /// A redactor for these values and any extra `also`.
    pub fn redactor(&self, also: &[String]) -> Redactor {
        Redactor::new(
            self.0
                .iter()
                .map(|(_, v)| v.clone())
                .chain(also.iter().cloned()),
        )
    }
}

/// What a redacted value is replaced with.
pub const REDACTED: &str = "***";
/// What replaces a whole text that could not be redacted in place.
pub const REDACTION_NOTE: &str = "[withheld: this text held a secret and could not be redacted]";

/// Replaces secret values in text and in JSON value trees. Each secret is matched as given,
/// and also line by line (a multi-line value printed a line at a time), by the string values
/// inside it when it is a JSON object (a Secrets Manager key/value secret), and in its
/// JSON-escaped form; the longest candidates are replaced first, and none shorter than
/// [`MIN_REDACTED_LEN`] (an empty secret never blanks out text).
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    /// How many, never which.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.needles.len())
    }
}

/// Keys of a JSON secret whose values name an identity or an address rather than a secret
/// (the fields of an RDS secret besides its password): not redacted on their own, or every
/// `janitor` or `postgres` in every text would be.
const PUBLIC_JSON_KEYS: &[&str] = &[
    "username",
    "user",
    "engine",
    "host",
    "hostname",
    "port",
    "dbname",
    "database",
    "dbinstanceidentifier",
    "dbclusteridentifier",
    "region",
];

fn json_leaves(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_leaves(x, out)),
        serde_json::Value::Object(o) => o
            .iter()
            .filter(|(k, _)| !PUBLIC_JSON_KEYS.contains(&k.to_ascii_lowercase().as_str()))
            .for_each(|(_, x)| json_leaves(x, out)),
        _ => {}
    }
}

/// Secrets at least this long are also matched reversed and base64-encoded (a shorter one's
/// encodings are too short to match without false alarms).
pub const MIN_ENCODED_LEN: usize = 8;

/// What a worker or build commonly prints instead of a secret itself: the value reversed,
/// and its base64 (standard and URL-safe alphabets) at each of the three byte alignments it
/// can have inside a longer encoded text — each the part of the encoding that depends on the
/// secret's bytes alone. Not every transformation (hex, a split, one character at a time):
/// see SECURITY.md.
fn encoded_forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    let bytes = value.as_bytes();
    let mut out = vec![value.chars().rev().collect::<String>()];
    for skip in 0..3usize {
        let mut padded = vec![0u8; skip];
        padded.extend_from_slice(bytes);
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE,
        ] {
            let text = engine.encode(&padded);
            // Characters of the groups that hold the secret's bytes only.
            let from = skip.div_ceil(3) * 4;
            let to = (padded.len() / 3) * 4;
            if to > from {
                out.push(text[from..to].to_string());
            }
        }
    }
    out.retain(|f| f.len() >= MIN_ENCODED_LEN);
    out
}

impl Redactor {
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        let mut needles = Vec::new();
        for v in values {
            if v.len() < MIN_REDACTED_LEN {
                continue;
            }
            needles.push(v.clone());
            let mut forms = Vec::new();
            if v.contains('\n') {
                forms.extend(v.lines().map(|l| l.trim_end_matches('\r').to_string()));
            }
            if let Ok(parsed @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) =
                serde_json::from_str::<serde_json::Value>(&v)
            {
                json_leaves(&parsed, &mut forms);
            }
            forms.push(v.clone());
            if v.len() >= MIN_ENCODED_LEN {
                forms.extend(encoded_forms(&v));
            }
            for f in forms {
                // Each form also as it appears inside JSON text, escaped.
                let escaped = serde_json::Value::String(f.clone()).to_string();
                let escaped = escaped[1..escaped.len() - 1].to_string();
                for g in [f, escaped] {
                    if g.trim().len() >= MIN_REDACTED_LEN {
                        needles.push(g);
                    }
                }
            }
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Redactor { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Whether any secret appears in `text`.
    pub fn leaks(&self, text: &str) -> bool {
        self.needles.iter().any(|n| text.contains(n.as_str()))
    }

    /// `text` with every secret replaced by `***`, longest first.
    pub fn redact(&self, text: &str) -> String {
        if !self.leaks(text) {
            return text.to_string();
        }
        let mut out = text.to_string();
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), REDACTED);
            }
        }
        // A replacement can join fragments into a value again (`s***ecret` cases); a text
        // that still holds one is withheld whole.
        if self.leaks(&out) {
            return REDACTION_NOTE.to_string();
        }
        out
    }

    /// Redacts every string (and every object key) of a JSON value tree in place; true when
    /// anything changed.
    pub fn redact_value(&self, v: &mut serde_json::Value) -> bool {
        if self.is_empty() {
            return false;
        }
        match v {
            serde_json::Value::String(s) => {
                let r = self.redact(s);
                let changed = r != *s;
                *s = r;
                changed
            }
            serde_json::Value::Array(a) => {
                // Every element, never short-circuited.
                let mut changed = false;
                for x in a.iter_mut() {
                    changed |= self.redact_value(x);
                }
                changed
            }
            serde_json::Value::Object(o) => {
                let mut changed = false;
                let entries: Vec<(String, serde_json::Value)> =
                    std::mem::take(o).into_iter().collect();
                for (k, mut x) in entries {
                    changed |= self.redact_value(&mut x);
                    let key = self.redact(&k);
                    changed |= key != k;
                    o.insert(key, x);
                }
                changed
            }
            _ => false,
        }
    }

    /// Redacts a serializable document through its value tree and reads it back. When the
    /// redacted tree no longer fits the type (a secret inside a field with fixed values), the
    /// changed strings are replaced by [`REDACTION_NOTE`] instead; `Err` only when even that does
    /// not fit, so the caller never keeps the unredacted document by accident.
    pub fn redact_document<T>(&self, doc: &T) -> Result<T, String>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let mut tree = serde_json::to_value(doc).map_err(|e| e.to_string())?;
        if !self.redact_value(&mut tree) {
            return serde_json::from_value(tree).map_err(|e| e.to_string());
        }
        match serde_json::from_value::<T>(tree.clone()) {
            Ok(clean) => Ok(clean),
            Err(_) => {
                let mut noted = serde_json::to_value(doc).map_err(|e| e.to_string())?;
                self.withhold(&mut noted);
                serde_json::from_value(noted)
                    .map_err(|e| format!("the document cannot be redacted and was not kept: {e}"))
            }
        }
    }

    /// Every string holding a secret replaced by the note.
    fn withhold(&self, v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) if self.leaks(s) => *s = REDACTION_NOTE.to_string(),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| self.withhold(x)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|x| self.withhold(x)),
            _ => {}
        }
    }
}

/// Where secret values come from.
pub trait SecretSource: Send + Sync {
    fn fetch(
        &self,
        reference: &SecretRef,
    ) -> impl Future<Output = Result<String, ServiceError>> + Send;
}

/// Secrets Manager and SSM, and STS for the agent's short-lived role credentials.
#[derive(Clone)]
pub struct AwsSecrets {
    pub secrets_manager: aws_sdk_secretsmanager::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub sts: aws_sdk_sts::Client,
}

impl AwsSecrets {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        AwsSecrets {
            secrets_manager: aws_sdk_secretsmanager::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
        }
    }
}

/// Short-lived credentials of a role (STS AssumeRole), for a container that must not reach
/// the instance's own role.
#[derive(Clone)]
pub struct RoleCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

impl std::fmt::Debug for RoleCredentials {
    /// The key id only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish()
    }
}

impl RoleCredentials {
    /// `AWS_ACCESS_KEY_ID=…` and the rest, for a container's environment.
    pub fn env(&self) -> Vec<String> {
        vec![
            format!("AWS_ACCESS_KEY_ID={}", self.access_key_id),
            format!("AWS_SECRET_ACCESS_KEY={}", self.secret_access_key),
            format!("AWS_SESSION_TOKEN={}", self.session_token),
        ]
    }
}

/// Where role credentials come from.
pub trait CredentialSource: Send + Sync {
    fn assume(
        &self,
        role_arn: &str,
        session: &str,
        duration: std::time::Duration,
    ) -> impl Future<Output = Result<RoleCredentials, ServiceError>> + Send;
}

impl CredentialSource for AwsSecrets {
    async fn assume(
        &self,
        role_arn: &str,
        session: &str,
        duration: std::time::Duration,
    ) -> Result<RoleCredentials, ServiceError> {
        // STS takes 900 s to the role's maximum (an hour unless raised).
        let seconds = duration.as_secs().clamp(900, 3600) as i32;
        let out = self
            .sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session)
            .duration_seconds(seconds)
            .send()
            .await
            .map_err(|e| ServiceError::aws("STS", "AssumeRole", role_arn.to_string(), e))?;
        let c = out.credentials().ok_or_else(|| {
            ServiceError::new(
                "STS",
                "AssumeRole",
                role_arn.to_string(),
                ErrorKind::Rejected,
                "the answer has no credentials",
            )
        })?;
        Ok(RoleCredentials {
            access_key_id: c.access_key_id().to_string(),
            secret_access_key: c.secret_access_key().to_string(),
            session_token: c.session_token().to_string(),
        })
    }
}

impl SecretSource for AwsSecrets {
    async fn fetch(&self, reference: &SecretRef) -> Result<String, ServiceError> {
        match reference {
            SecretRef::SecretsManager(name) => {
                let out = self
                    .secrets_manager
                    .get_secret_value()
                    .secret_id(name)
                    .send()
                    .await
                    .map_err(|e| {
                        ServiceError::aws("Secrets Manager", "GetSecretValue", name.clone(), e)
                    })?;
                out.secret_string().map(str::to_string).ok_or_else(|| {
                    ServiceError::new(
                        "Secrets Manager",
                        "GetSecretValue",
                        name.clone(),
                        ErrorKind::Rejected,
                        "the secret has no string value (a binary secret cannot be an environment variable)",
                    )
                })
            }
            SecretRef::Ssm(name) => {
                let out = self
                    .ssm
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| ServiceError::aws("SSM", "GetParameter", name.clone(), e))?;
                out.parameter()
                    .and_then(|p| p.value())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ServiceError::new(
                            "SSM",
                            "GetParameter",
                            name.clone(),
                            ErrorKind::NotFound,
                            "no value",
                        )
                    })
            }
        }
    }
}

/// Fetches every secret of a job; the first that cannot be had is a sentence naming it.
pub async fn resolve<S: SecretSource>(
    source: &S,
    secrets: &[(String, String)],
) -> Result<SecretValues, String> {
    let mut values = Vec::with_capacity(secrets.len());
    for (name, reference) in secrets {
        let parsed = parse_secret_ref(reference).map_err(|e| format!("secret `{name}`: {e}"))?;
        let value = source
            .fetch(&parsed)
            .await
            .map_err(|e| format!("secret `{name}` ({reference}) could not be read: {e}"))?;
        values.push((name.clone(), value));
    }
    Ok(SecretValues(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_multiline_json_and_empty_secrets() {
        let pem = "-----BEGIN KEY-----\nAAAAbbbbCCCC\nddddEEEE\n-----END KEY-----";
        let json = r#"{"username":"admin","password":"pa55-w0rd\"x"}"#;
        let r = SecretValues::new(vec![
            ("SHORT".into(), "abcd".into()),
            ("LONG".into(), "abcdefgh".into()),
            ("EMPTY".into(), String::new()),
            ("PEM".into(), pem.into()),
            ("JSON".into(), json.into()),
        ])
        .redactor(&[]);
        // Longest first: the longer value is not left half-shown.
        assert_eq!(r.redact("x abcdefgh y abcd"), "x *** y ***");
        // An empty secret blanks nothing out.
        assert_eq!(r.redact("plain text"), "plain text");
        // A key printed line by line, and one line of it alone.
        assert_eq!(r.redact("line: AAAAbbbbCCCC"), "line: ***");
        // A key/value secret's password on its own, raw and JSON-escaped; not its username.
        assert_eq!(r.redact(r#"pw=pa55-w0rd"x"#), "pw=***");
        assert_eq!(r.redact("user admin"), "user admin");
        assert_eq!(r.redact(r#"{"p":"pa55-w0rd\"x"}"#), r#"{"p":"***"}"#);
        let mut tree = serde_json::json!({"a": [format!("k {pem} k")], "abcdefgh": 1});
        assert!(r.redact_value(&mut tree));
        assert!(!tree.to_string().contains("AAAA"), "{tree}");
        assert!(tree.get("***").is_some(), "keys are redacted too: {tree}");
    }

    /// `echo "$TOKEN" | base64`, the token inside a longer encoded text at any alignment,
    /// and `rev`: each caught; a short secret's encodings are not matched.
    #[test]
    fn base64_and_reversed_forms_are_redacted() {
        use base64::Engine as _;
        let secret = "hf_buildSecretValue42";
        let r = SecretValues::new(vec![("HF".into(), secret.into())]).redactor(&[]);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for printed in [
            b64(&format!("{secret}\n")),
            b64(&format!("x{secret}")),
            b64(&format!("ab{secret}yz")),
            base64::engine::general_purpose::URL_SAFE.encode(format!("~~{secret}")),
            secret.chars().rev().collect(),
        ] {
            let out = r.redact(&format!("[build] {printed}"));
            assert!(out.contains(REDACTED), "{printed} -> {out}");
            assert!(!r.leaks(&out), "{out}");
        }
        let short = SecretValues::new(vec![("S".into(), "abcd".into())]).redactor(&[]);
        assert_eq!(short.redact("dcba YWJjZA=="), "dcba YWJjZA==");
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Succeeded,
        Failed,
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug)]
    struct Doc {
        status: Kind,
        reason: String,
    }

    #[test]
    fn a_document_that_cannot_take_the_mark_is_withheld_not_kept() {
        // A secret equal to a fixed value: `***` no longer parses as the enum.
        let r = Redactor::new(["failed".to_string(), "hunter22".to_string()]);
        let doc = Doc {
            status: Kind::Failed,
            reason: "password hunter22".into(),
        };
        match r.redact_document(&doc) {
            Ok(d) => assert!(!format!("{d:?}").contains("hunter22"), "{d:?}"),
            Err(e) => assert!(e.contains("not kept"), "{e}"),
        }
        let fine = Redactor::new(["hunter22".to_string()])
            .redact_document(&doc)
            .unwrap();
        assert_eq!(fine.reason, "password ***");
        assert_eq!(fine.status, Kind::Failed);
    }

    proptest::proptest! {
        /// No secret survives in any string of a redacted document, whatever the secrets
        /// (quotes, backslashes, newlines, overlaps) and wherever they are embedded.
        #[test]
        fn no_secret_survives(
            secrets in proptest::collection::vec("[a-z\"\\\n{}:]{4,24}", 1..4),
            pads in proptest::collection::vec("[ -~\n]{0,12}", 1..6),
        ) {
            let r = Redactor::new(secrets.clone());
            let texts: Vec<String> = pads
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{p}{}{p}", secrets[i % secrets.len()]))
                .collect();
            let mut tree = serde_json::json!({"lines": texts.clone(), "nested": {"t": texts.join("\n")}});
            r.redact_value(&mut tree);
            fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
                match v {
                    serde_json::Value::String(s) => out.push(s.clone()),
                    serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
                    serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| { out.push(k.clone()); strings(x, out) }),
                    _ => {}
                }
            }
            let mut all = Vec::new();
            strings(&tree, &mut all);
            for s in &all {
                for secret in &secrets {
                    proptest::prop_assert!(!s.contains(secret.as_str()), "{secret:?} in {s:?}");
                }
            }
        }
    }

    #[test]
    fn values_are_redacted_and_never_printed() {
        let s = SecretValues::new(vec![
            ("GITHUB_TOKEN".into(), "ghp_abcdef123456".into()),
            ("TINY".into(), "ab".into()),
        ]);
        let r = s.redactor(&["hf_zz99".into()]);
        assert_eq!(
            r.redact("push with ghp_abcdef123456 to ab"),
            "push with *** to ab"
        );
        assert_eq!(r.redact("hf_zz99!"), "***!");
        let shown = format!("{s:?}");
        assert!(
            shown.contains("GITHUB_TOKEN") && !shown.contains("ghp_"),
            "{shown}"
        );
        assert_eq!(s.get("GITHUB_TOKEN"), Some("ghp_abcdef123456"));
    }
}
