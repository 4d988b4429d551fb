//! On-demand EC2 prices used for cost estimates: the one table, with its date and source.

/// When and where the prices below were read.
pub const PRICES_AS_OF: &str =
    "2026-11-01, AWS EC2 on-demand pricing page, region us-east-1, Linux";

/// What the launch template starts when a repository names no instance type.
pub const DEFAULT_INSTANCE_TYPE: &str = "g5.xlarge";

/// Hourly on-demand price in USD by instance type (us-east-1, Linux).
pub const HOURLY_USD: &[(&str, f64)] = &[
    ("g4dn.xlarge", 0.526),
    ("g4dn.2xlarge", 0.752),
    ("g5.xlarge", 1.006),
    ("g5.2xlarge", 1.212),
    ("g5.4xlarge", 1.624),
    ("c7i.xlarge", 0.1785),
    ("c7i.2xlarge", 0.357),
    ("g6.xlarge", 0.8048),
    ("g6.2xlarge", 0.9776),
    ("g6e.xlarge", 1.861),
    ("p3.2xlarge", 3.06),
    ("t3.micro", 0.0104),
    ("t3.medium", 0.0416),
];

/// The hourly price of an instance type, when the table knows it.
pub fn hourly_usd(instance_type: &str) -> Option<f64> {
    HOURLY_USD
        .iter()
        .find(|(t, _)| *t == instance_type)
        .map(|(_, p)| *p)
}

/// Price of `seconds` on `instance_type`, rounded to a tenth of a cent.
pub fn cost_usd(instance_type: &str, seconds: f64) -> Option<f64> {
    hourly_usd(instance_type).map(|h| (h * seconds / 3600.0 * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_and_unknown() {
        assert_eq!(super::cost_usd("g5.xlarge", 3600.0), Some(1.006));
        assert_eq!(super::cost_usd("x9.huge", 3600.0), None);
    }
}
