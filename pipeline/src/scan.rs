//! The `ERROR` scan over a job's output: lines with the word `ERROR` that none of the job's
//! `expected_errors` patterns explain, less the runpod SDK's own lines that only say it runs
//! outside RunPod.

use janitor_model::report::ErrorLines;
use regex::Regex;

/// How many unexpected `ERROR` lines a report quotes.
pub const ERROR_LINES_KEPT: usize = 10;

/// Finds `ERROR` lines that none of the job's `expected_errors` patterns explain.
pub struct ErrorScanner {
    word: Regex,
    expected: Vec<Regex>,
    local_only: Regex,
    found: ErrorLines,
    /// SDK lines not counted because they only say the worker runs outside RunPod.
    pub outside_runpod: u32,
}

impl ErrorScanner {
    /// Patterns were validated when the job was decoded; one that still fails to compile is
    /// ignored rather than failing the job.
    pub fn new(expected: &[String]) -> Self {
        // A literal pattern, covered by the tests below.
        #[allow(clippy::expect_used)]
        let word = Regex::new(r"\bERROR\b").expect("static regex");
        // The SDK's `progress_update` and streamed results post to RunPod's webhook URLs; in
        // server mode those are unset and the SDK posts to its placeholders (`JOB_DONE_URL`,
        // `JOB_STREAM_URL`) and logs `ERROR | id | Failed to return job results. |
        // JOB_DONE_URL&isStream=false`. On RunPod the post succeeds, so the line says nothing
        // about the worker. Only the placeholder matches: a real URL's failure still counts.
        #[allow(clippy::expect_used)]
        let local_only = Regex::new(
            r"\b(Failed to return job results|Error while returning job result)\.? \| (JOB_DONE_URL|JOB_STREAM_URL)(&|$)",
        )
        .expect("static regex");
        ErrorScanner {
            word,
            expected: expected.iter().filter_map(|p| Regex::new(p).ok()).collect(),
            local_only,
            found: ErrorLines::default(),
            outside_runpod: 0,
        }
    }

    pub fn scan(&mut self, line: &str) {
        if !self.word.is_match(line) {
            return;
        }
        if self.local_only.is_match(line) {
            self.outside_runpod += 1;
            return;
        }
        if !self.expected.iter().any(|r| r.is_match(line)) {
            self.found.count += 1;
            if self.found.first.len() < ERROR_LINES_KEPT {
                self.found.first.push(line.chars().take(1000).collect());
            }
        }
    }

    /// Takes back up to `n` counted lines that contain `needle`: lines a later answer showed
    /// to be the SDK's local server failing where RunPod would not. They count as
    /// `outside_runpod`.
    pub fn forgive(&mut self, needle: &str, n: u32) {
        let mut left = n;
        while left > 0 && self.found.count > 0 {
            match self.found.first.iter().position(|l| l.contains(needle)) {
                Some(i) => {
                    self.found.first.remove(i);
                }
                // Counted but no longer quoted: the count alone goes down.
                None if self.found.count > self.found.first.len() as u64 => {}
                None => break,
            }
            self.found.count -= 1;
            self.outside_runpod += 1;
            left -= 1;
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
    fn the_sdks_placeholder_url_is_not_the_workers_error() {
        let mut s = ErrorScanner::new(&[]);
        // What runpod 1.12.0 logs for progress_update in server mode.
        s.scan("ERROR  | test-5a4a | Failed to return job results. | JOB_DONE_URL&isStream=false");
        s.scan("ERROR  | test-5a4a | Failed to return job results. | JOB_STREAM_URL&isStream=true");
        // A real webhook that fails is the worker's problem.
        s.scan("ERROR  | j1 | Failed to return job results. | 500, message='x', url='https://api.runpod.ai/v2/x/job-done'");
        s.scan("ERROR  | j1 | JOB_DONE_URL is broken");
        assert_eq!(s.outside_runpod, 2);
        // uvicorn's line for the SDK's own 500, taken back once the answer is understood.
        s.scan("ERROR:    Exception in ASGI application");
        s.forgive("Exception in ASGI application", 1);
        s.forgive("Exception in ASGI application", 1);
        assert_eq!(s.outside_runpod, 3);
        assert_eq!(s.into_lines().count, 2);
    }

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
