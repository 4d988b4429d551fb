//! Property tests: the message decoder and the config parser never panic, whatever they are
//! fed, and every refusal says why. `PROPTEST_CASES` sets the number of cases (the default here
//! is a short run for `make test`; `bench/fuzz.sh` runs a million).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use janitor_model::config::{self, ParseOptions};
use janitor_model::job;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// JSON values shaped like job messages: the right keys with values of any type, nested.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z0-9/._:-]{0,24}".prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("schema".to_string()),
        Just("job_id".to_string()),
        Just("run_id".to_string()),
        Just("repo".to_string()),
        Just("organization".to_string()),
        Just("name".to_string()),
        Just("url".to_string()),
        Just("ref".to_string()),
        Just("timeout".to_string()),
        Just("prompt".to_string()),
        Just("gpu_required".to_string()),
        Just("enqueued_at".to_string()),
        Just("expected_errors".to_string()),
        Just("smoke_command".to_string()),
        "[a-z_]{1,12}",
    ]
}

/// YAML-ish text: config keys, indentation, anchors, aliases, flow collections, noise.
fn yaml_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("repositories:".to_string()),
        Just("\n  - ".to_string()),
        Just("\n    ".to_string()),
        Just("name: ".to_string()),
        Just("organization: ".to_string()),
        Just("timeout: ".to_string()),
        Just("url: ".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(", ".to_string()),
        Just(": ".to_string()),
        Just("\n".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        "[a-z0-9 ./-]{0,10}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn decode_never_panics_on_any_text(body in any::<String>()) {
        if let Err(r) = job::decode(&body, false) {
            prop_assert!(!r.reason.is_empty());
        }
    }

    #[test]
    fn decode_never_panics_on_message_shapes(mut v in json_value(), schema in prop_oneof![Just(1u64), any::<u64>()]) {
        if let Some(o) = v.as_object_mut() {
            o.insert("schema".into(), schema.into());
        }
        match job::decode(&v.to_string(), true) {
            Ok(j) => prop_assert!(!j.job_id.is_empty()),
            Err(r) => prop_assert!(!r.reason.is_empty()),
        }
    }

    #[test]
    fn config_parse_never_panics(text in yaml_text()) {
        if let Err(errors) = config::parse(Path::new("c.yaml"), &text, &ParseOptions::default()) {
            prop_assert!(!errors.0.is_empty());
            for e in &errors.0 {
                prop_assert!(!e.message.is_empty());
                prop_assert!(e.to_string().starts_with("c.yaml"));
            }
        }
    }
}
