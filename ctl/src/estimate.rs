//! The cost of a run before it starts: every job at its whole timeout on its instance type,
//! priced from the one table in `janitor_model::pricing`.

use std::time::Duration;

use janitor_model::config::WorkersConfig;
use janitor_model::duration;
use janitor_model::pricing;

/// The cost of a run if every job used its whole timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub total_usd: f64,
    /// One line per instance type: `3 × g5.xlarge × 30m00s at $1.006/h = $1.509`.
    pub lines: Vec<String>,
    /// Types the price table does not know.
    pub unknown: Vec<String>,
}

/// Jobs × timeout × hourly price, grouped by instance type.
pub fn estimate(cfg: &WorkersConfig) -> Estimate {
    let mut groups: std::collections::BTreeMap<(&str, u64), usize> =
        std::collections::BTreeMap::new();
    for r in &cfg.repositories {
        let t = r
            .instance_type
            .as_deref()
            .unwrap_or(pricing::DEFAULT_INSTANCE_TYPE);
        *groups.entry((t, r.timeout.as_secs())).or_default() += 1;
    }
    let mut out = Estimate {
        total_usd: 0.0,
        lines: Vec::new(),
        unknown: Vec::new(),
    };
    for ((t, secs), n) in groups {
        let took = duration::format(Duration::from_secs(secs));
        match pricing::hourly_usd(t) {
            Some(h) => {
                let cost = h * secs as f64 / 3600.0 * n as f64;
                out.total_usd += cost;
                out.lines
                    .push(format!("{n} × {t} × {took} at ${h}/h = ${cost:.2}"));
            }
            None => {
                out.unknown.push(t.to_string());
                out.lines
                    .push(format!("{n} × {t} × {took}: price unknown, not counted"));
            }
        }
    }
    out.total_usd = (out.total_usd * 1000.0).round() / 1000.0;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use janitor_model::config::{parse, ParseOptions};

    #[test]
    fn estimate_groups_and_flags_unknown_types() {
        let cfg = parse(
            std::path::Path::new("c.yaml"),
            "repositories:\n  - a/one\n  - a/two\n  - {name: three, organization: a, instance_type: x9.huge}\n",
            &ParseOptions::default(),
        )
        .unwrap();
        let e = estimate(&cfg);
        assert_eq!(e.total_usd, 1.006);
        assert_eq!(e.unknown, ["x9.huge"]);
        assert_eq!(e.lines[0], "2 × g5.xlarge × 30m00s at $1.006/h = $1.01");
        assert_eq!(
            e.lines[1],
            "1 × x9.huge × 30m00s: price unknown, not counted"
        );
    }
}
