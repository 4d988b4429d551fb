//! The `ERROR` scan over a job's output: lines with the word `ERROR` that none of the job's
//! `expected_errors` patterns explain.

use janitor_model::report::ErrorLines;
use regex::Regex;

/// How many unexpected `ERROR` lines a report quotes.
pub const ERROR_LINES_KEPT: usize = 10;

/// Finds `ERROR` lines that none of the job's `expected_errors` patterns explain.
pub struct ErrorScanner {
    word: Regex,
    expected: Vec<Regex>,
    found: ErrorLines,
}

impl ErrorScanner {
    /// Patterns were validated when the job was decoded; one that still fails to compile is
    /// ignored rather than failing the job.
    pub fn new(expected: &[String]) -> Self {
        // A literal pattern, covered by the tests below.
        #[allow(clippy::expect_used)]
        let word = Regex::new(r"\bERROR\b").expect("static regex");
        ErrorScanner {
            word,
            expected: expected.iter().filter_map(|p| Regex::new(p).ok()).collect(),
            found: ErrorLines::default(),
        }
    }

    pub fn scan(&mut self, line: &str) {
        if self.word.is_match(line) && !self.expected.iter().any(|r| r.is_match(line)) {
            self.found.count += 1;
            if self.found.first.len() < ERROR_LINES_KEPT {
                self.found.first.push(line.chars().take(1000).collect());
            }
        }
    }

    pub fn into_lines(self) -> ErrorLines {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_scanner_matches_the_word_only() {
        let mut s = ErrorScanner::new(&["ERROR: cuda warmup".to_string()]);
        for line in [
            "ERROR: disk full",
            "xERRORx",
            "an error",
            "ERROR: cuda warmup skipped",
            "[ERROR] bad",
        ] {
            s.scan(line);
        }
        let found = s.into_lines();
        assert_eq!(found.count, 2);
        assert_eq!(found.first, ["ERROR: disk full", "[ERROR] bad"]);
    }
}
