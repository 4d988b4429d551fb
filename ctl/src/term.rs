//! Text for a terminal. Reports carry what repositories, workers and agents wrote (a test's
//! name, a worker's error, the agent's summary), and a terminal obeys escape codes: one could
//! move the cursor up and overwrite a failed result with a passing one. Everything janitorctl
//! prints goes through [`clean`] (the `say!`/`tell!` macros; `layering.rs` holds every print
//! to them), which shows every control character but the newline and the tab, and every
//! bidirectional override, as a visible escape; one-line fields of untrusted text go through
//! [`line`], which escapes newlines too, so no field can start a line of its own.

use std::borrow::Cow;

/// Unicode's bidirectional controls, which reorder what a terminal shows (Trojan Source).
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn escape(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let unsafe_char =
        |c: char| (c.is_control() && c != '\t' && !(keep_newlines && c == '\n')) || is_bidi(c);
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' if !keep_newlines => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if unsafe_char(c) && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Text whose lines are janitorctl's own, with what it quotes made harmless: no control
/// character but newlines and tabs, no bidirectional override.
pub fn clean(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

/// One line of untrusted text: [`clean`], and a newline shown as `\n`.
pub fn line(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// Serialised JSON made as safe: serde_json escapes C0 controls, but not DEL, the C1 controls
/// (`\u{9b}` starts an escape sequence on some terminals) or bidirectional overrides; those
/// can only be inside strings, where `\uXXXX` means the same character. Still valid JSON, the
/// same values.
pub fn json(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| (c.is_control() && c != '\n') || is_bidi(c);
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Prints serialised JSON on standard output, made safe by [`json`].
pub fn print_json_text(text: &str) {
    println!("{}", json(text));
}

/// `println!` through [`clean`].
macro_rules! say {
    () => { println!() };
    ($($arg:tt)*) => { println!("{}", $crate::term::clean(&format!($($arg)*))) };
}

/// `eprintln!` through [`clean`].
macro_rules! tell {
    () => { eprintln!() };
    ($($arg:tt)*) => { eprintln!("{}", $crate::term::clean(&format!($($arg)*))) };
}

/// `print!` through [`clean`].
macro_rules! say_part {
    ($($arg:tt)*) => { print!("{}", $crate::term::clean(&format!($($arg)*))) };
}

/// `eprint!` through [`clean`].
macro_rules! tell_part {
    ($($arg:tt)*) => { eprint!("{}", $crate::term::clean(&format!($($arg)*))) };
}

pub(crate) use {say, say_part, tell, tell_part};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_codes_and_overrides_are_shown_not_obeyed() {
        let hostile = "ok\x1b[1A\x1b[2K\r✓ worker: success\u{9b}31m\u{202e}txt.exe\u{7}";
        let shown = clean(hostile);
        assert_eq!(
            shown,
            "ok\\x1b[1A\\x1b[2K\\r✓ worker: success\\x9b31m\\u{202e}txt.exe\\x07"
        );
        assert!(!shown.chars().any(|c| c.is_control()));
        assert_eq!(clean("two\nlines\tand a tab"), "two\nlines\tand a tab");
        assert!(matches!(clean("plain ✓ text"), Cow::Borrowed(_)));
        assert_eq!(line("cause\n✓ other: success"), "cause\\n✓ other: success");
    }

    #[test]
    fn json_stays_json_with_the_same_values() {
        let value = serde_json::json!({"name": "a\u{1b}[2Kb\u{9b}c\u{202e}d\u{7f}", "n": 1});
        let text = serde_json::to_string_pretty(&value).unwrap();
        let safe = json(&text);
        assert!(
            !safe
                .chars()
                .any(|c| c.is_control() && c != '\n' || is_bidi(c)),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }
}
