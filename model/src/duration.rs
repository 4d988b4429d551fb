//! Human durations (`90s`, `20m`, `1h30m`) as written in config files and flags.

use std::time::Duration;

/// Parses `90s`, `20m`, `2h`, `1h30m`, `1m30s`. A bare number is refused: the unit must be said.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write it like `90s`, `20m` or `1h30m`".to_string());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut seen_unit = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let factor = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => {
                return Err(format!(
                    "`{text}` is not a duration: unexpected `{c}`; write it like `90s`, `20m` or `1h30m`"
                ))
            }
        };
        let n: u64 = digits.parse().map_err(|_| {
            format!("`{text}` is not a duration: a number must come before `{c}`; write it like `90s`, `20m` or `1h30m`")
        })?;
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        digits.clear();
        seen_unit = true;
    }
    if !digits.is_empty() || !seen_unit {
        return Err(format!(
            "`{text}` has no unit; write it like `90s`, `20m` or `1h30m`"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way the seeds print them: `4m32s`, `1h02m`, `45s`.
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let ok = [
            ("90s", 90),
            ("20m", 1200),
            ("1h30m", 5400),
            ("1m30s", 90),
            ("2h", 7200),
        ];
        for (text, secs) in ok {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        for bad in ["", "90", "m", "1x", "1.5m", "-3s", "99999999999999999999h"] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format(Duration::from_secs(272)), "4m32s");
        assert_eq!(format(Duration::from_secs(45)), "45s");
        assert_eq!(format(Duration::from_secs(3720)), "1h02m");
    }
}
