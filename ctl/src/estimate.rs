//! The cost of a run before it starts: every job at its whole timeout on its instance type,
//! priced from the one table in `janitor_model::pricing`.

use std::time::Duration;

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

/// Jobs × timeout × hourly price: (pool, instance type, timeout seconds) each, one line per
/// pool and instance type.
pub fn estimate_jobs<'a>(jobs: impl Iterator<Item = (Option<&'a str>, &'a str, u64)>) -> Estimate {
    let mut groups: std::collections::BTreeMap<(Option<&str>, &str, u64), usize> =
        std::collections::BTreeMap::new();
    for key in jobs {
        *groups.entry(key).or_default() += 1;
    }
    let mut out = Estimate {
        total_usd: 0.0,
        lines: Vec::new(),
        unknown: Vec::new(),
    };
    for ((pool, t, secs), n) in groups {
        let took = duration::format(Duration::from_secs(secs));
        let pool = pool.map_or(String::new(), |p| format!("{p}: "));
        match pricing::hourly_usd(t) {
            Some(h) => {
                let cost = h * secs as f64 / 3600.0 * n as f64;
                out.total_usd += cost;
                out.lines
                    .push(format!("{pool}{n} × {t} × {took} at ${h}/h = ${cost:.2}"));
            }
            None => {
                out.unknown.push(t.to_string());
                out.lines.push(format!(
                    "{pool}{n} × {t} × {took}: price unknown, not counted"
                ));
            }
        }
    }
    out.total_usd = (out.total_usd * 1000.0).round() / 1000.0;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_groups_and_flags_unknown_types() {
        let jobs = [
            (None, "g5.xlarge", 1800),
            (None, "g5.xlarge", 1800),
            (None, "x9.huge", 1800),
        ];
        let e = estimate_jobs(jobs.into_iter());
        assert_eq!(e.total_usd, 1.006);
        assert_eq!(e.unknown, ["x9.huge"]);
        assert_eq!(e.lines[0], "2 × g5.xlarge × 30m00s at $1.006/h = $1.01");
        assert_eq!(
            e.lines[1],
            "1 × x9.huge × 30m00s: price unknown, not counted"
        );
        let pooled = [
            (Some("cpu"), "c7i.xlarge", 3600),
            (Some("gpu-48"), "g6e.xlarge", 1800),
        ];
        let e = estimate_jobs(pooled.into_iter());
        assert_eq!(
            e.lines,
            [
                "cpu: 1 × c7i.xlarge × 1h00m at $0.1785/h = $0.18",
                "gpu-48: 1 × g6e.xlarge × 30m00s at $1.861/h = $0.93"
            ]
        );
        assert_eq!(e.total_usd, 1.109);
    }
}
