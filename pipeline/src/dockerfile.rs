//! A repository's Dockerfile as janitord sends it to BuildKit: every `RUN --mount=type=cache`
//! gets an id in the repository's own namespace, so one repository's build never reads or
//! writes the cache another repository's build filled (BuildKit keys cache mounts by id,
//! which defaults to the target path, across every build of the engine). Pure: text in, text
//! out, with the number of mounts changed.

/// Prefix of every cache id janitord gives (`janitor-<16 hex>/<the repository's id>`).
pub const CACHE_ID_PREFIX: &str = "janitor-";

/// The namespace of `org/name`'s cache mounts: the same for every build of the repository
/// (GitHub's names are case-insensitive), different for any other.
pub fn cache_namespace(org: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{org}/{name}").to_ascii_lowercase().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{CACHE_ID_PREFIX}{hex}")
}

/// The Dockerfile with each cache mount's id set to `{namespace}/{its id, else its target}`,
/// and how many were changed. `Err` names the file (`path`) and line of a cache mount that
/// cannot be rewritten safely (quoted, or its type a variable): refused rather than left
/// shared.
pub fn namespace_cache_mounts(
    text: &str,
    path: &str,
    namespace: &str,
) -> Result<(String, usize), String> {
    let escape = escape_char(text);
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let lines = line_starts(text);
    let mut i = 0;
    while i < lines.len() {
        let (start, line) = lines[i];
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            i += 1;
            continue;
        }
        let word_end = trimmed
            .find(|c: char| c.is_whitespace())
            .unwrap_or(trimmed.len());
        let instruction = trimmed[..word_end].to_ascii_uppercase();
        let at = start + (line.len() - trimmed.len()) + word_end;
        let (end_line, heredoc) = instruction_end(&lines, i, escape);
        if instruction == "RUN" {
            let upto = lines.get(end_line + 1).map_or(text.len(), |(s, _)| *s);
            for (range, value) in mount_flags(text, at, upto, escape) {
                let line_no = text[..range.start].matches('\n').count() + 1;
                if let Some(new) = namespaced(&value, namespace)
                    .map_err(|why| format!("{path}:{line_no}: `--mount={value}`: {why}"))?
                {
                    edits.push((range, new));
                }
            }
        }
        i = end_line + 1;
        // A heredoc's body is text, not instructions.
        if let Some(tag) = heredoc {
            while i < lines.len() && lines[i].1.trim() != tag {
                i += 1;
            }
            i += 1;
        }
    }
    let count = edits.len();
    let mut out = String::with_capacity(text.len() + count * 32);
    let mut last = 0;
    for (range, new) in edits {
        out.push_str(&text[last..range.start]);
        out.push_str(&new);
        last = range.end;
    }
    out.push_str(&text[last..]);
    Ok((out, count))
}

/// The escape character (`# escape=` before the first instruction), `\` by default.
fn escape_char(text: &str) -> char {
    text.lines()
        .map(str::trim)
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| {
            let d = l.trim_start_matches('#').trim();
            let (k, v) = d.split_once('=')?;
            (k.trim().eq_ignore_ascii_case("escape"))
                .then(|| v.trim().chars().next())
                .flatten()
        })
        .unwrap_or('\\')
}

/// Each line with the byte offset it starts at (its `\n` not included).
fn line_starts(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    for line in text.split('\n') {
        out.push((start, line));
        start += line.len() + 1;
    }
    out
}

fn continues(line: &str, escape: char) -> bool {
    line.trim_end().ends_with(escape)
}

/// The last line of the instruction starting at line `i` (continuations followed, comment
/// lines inside it skipped), and the heredoc tag it opens, if any.
fn instruction_end(lines: &[(usize, &str)], i: usize, escape: char) -> (usize, Option<String>) {
    let mut j = i;
    let mut heredoc = heredoc_tag(lines[i].1);
    while j < lines.len() && continues(lines[j].1, escape) {
        j += 1;
        while j < lines.len() && lines[j].1.trim_start().starts_with('#') {
            j += 1;
        }
        if let Some(line) = lines.get(j) {
            heredoc = heredoc.or_else(|| heredoc_tag(line.1));
        }
    }
    (j.min(lines.len() - 1), heredoc)
}

/// `EOF` of a line holding `<<EOF`, `<<-EOF` or `<<"EOF"`.
fn heredoc_tag(line: &str) -> Option<String> {
    let at = line.find("<<")?;
    let tag: String = line[at + 2..]
        .trim_start_matches('-')
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!tag.is_empty() && tag.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        .then_some(tag)
}

/// The byte ranges and values of the `--mount=` flags of one `RUN` (its flags are the words
/// starting with `--` before the command), between `from` and `upto`.
fn mount_flags(
    text: &str,
    from: usize,
    upto: usize,
    escape: char,
) -> Vec<(std::ops::Range<usize>, String)> {
    let bytes = &text[..upto];
    let mut out = Vec::new();
    let mut pos = from;
    loop {
        // Whitespace, line continuations and the comment lines inside them.
        loop {
            let rest = &bytes[pos..];
            let skipped = rest.len() - rest.trim_start_matches([' ', '\t', '\r']).len();
            pos += skipped;
            let rest = &bytes[pos..];
            if rest.starts_with(escape)
                && rest[escape.len_utf8()..]
                    .trim_start_matches([' ', '\t', '\r'])
                    .starts_with('\n')
            {
                pos += rest.find('\n').map_or(rest.len(), |n| n + 1);
                while bytes[pos..].trim_start().starts_with('#') {
                    pos += bytes[pos..].find('\n').map_or(bytes.len() - pos, |n| n + 1);
                }
                continue;
            }
            if skipped == 0 {
                break;
            }
        }
        let rest = &bytes[pos..];
        if !rest.starts_with("--") {
            return out;
        }
        let len = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        let word = &rest[..len];
        if let Some(value) = word.strip_prefix("--mount=") {
            let start = pos + "--mount=".len();
            out.push((start..pos + len, value.to_string()));
        }
        pos += len;
    }
}

/// A mount's value with its id namespaced; `None` when it is not a cache mount (or names no
/// target, which BuildKit refuses anyway).
fn namespaced(value: &str, namespace: &str) -> Result<Option<String>, String> {
    let fields: Vec<&str> = value.split(',').collect();
    let get = |keys: &[&str]| {
        fields.iter().find_map(|f| {
            let (k, v) = f.split_once('=')?;
            keys.iter()
                .any(|key| k.trim().eq_ignore_ascii_case(key))
                .then_some(v)
        })
    };
    // BuildKit unquotes the value and expands build arguments in it: what could turn out to be
    // a cache mount without reading as one is refused.
    let opaque = value.contains(['"', '\'', '$']);
    let kind = match get(&["type"]) {
        None if opaque => {
            return Err("a mount written with quotes or variables and no plain `type=` cannot be told from a cache mount; write `type=…` first, as text".into())
        }
        None => return Ok(None),
        Some(kind) if kind.contains(['"', '\'', '$']) => {
            return Err("a mount whose type is quoted or a variable cannot be kept to this repository; write `type=cache` (or another type) as text".into())
        }
        Some(kind) => kind,
    };
    if !kind.eq_ignore_ascii_case("cache") {
        return Ok(None);
    }
    if value.contains(['"', '\'']) {
        return Err(
            "a quoted cache mount cannot be kept to this repository; write it without quotes"
                .into(),
        );
    }
    let Some(id) = get(&["id"]).or_else(|| get(&["target", "dst", "destination"])) else {
        return Ok(None);
    };
    let new_id = format!("id={namespace}/{id}");
    let mut out: Vec<String> = fields
        .iter()
        .filter(|f| {
            !f.split_once('=')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("id"))
        })
        .map(|f| f.to_string())
        .collect();
    out.push(new_id);
    Ok(Some(out.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "janitor-0123456789abcdef";

    fn check(input: &str, expected: &str, count: usize) {
        let (out, n) = namespace_cache_mounts(input, "Dockerfile", NS).unwrap();
        assert_eq!(out, expected, "{input}");
        assert_eq!(n, count, "{input}");
    }

    #[test]
    fn cache_mounts_get_the_repositorys_namespace() {
        check(
            "FROM x\nRUN --mount=type=cache,target=/root/.cache/pip pip install -r r.txt\n",
            &format!("FROM x\nRUN --mount=type=cache,target=/root/.cache/pip,id={NS}//root/.cache/pip pip install -r r.txt\n"),
            1,
        );
        // An id of its own is kept, inside the namespace; other options stay.
        check(
            "run --mount=type=cache,id=pip,target=/c,sharing=locked --network=none make\n",
            &format!(
                "run --mount=type=cache,target=/c,sharing=locked,id={NS}/pip --network=none make\n"
            ),
            1,
        );
        // Two mounts, across a continuation with a comment line inside it.
        check(
            "RUN --mount=type=cache,target=/a \\\n# a comment\n    --mount=type=bind,source=x,target=/b \\\n    --mount=type=cache,dst=/c true\n",
            &format!("RUN --mount=type=cache,target=/a,id={NS}//a \\\n# a comment\n    --mount=type=bind,source=x,target=/b \\\n    --mount=type=cache,dst=/c,id={NS}//c true\n"),
            2,
        );
        // The escape directive's continuation.
        check(
            "# escape=`\nFROM x\nRUN --mount=type=cache,target=/a `\n    true\n",
            &format!(
                "# escape=`\nFROM x\nRUN --mount=type=cache,target=/a,id={NS}//a `\n    true\n"
            ),
            1,
        );
    }

    #[test]
    fn what_is_not_a_cache_mount_flag_is_left_alone() {
        for text in [
            "FROM x\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\n",
            "FROM x\nRUN echo --mount=type=cache,target=/x\n",
            "FROM x\n# RUN --mount=type=cache,target=/x\n",
            "FROM x\nCOPY --from=y /a /b\n",
            "FROM x\nRUN --mount=target=/x true\n",
            "FROM x\nRUN <<EOF\nRUN --mount=type=cache,target=/x\nEOF\n",
        ] {
            check(text, text, 0);
        }
    }

    #[test]
    fn what_cannot_be_kept_apart_is_refused_by_line() {
        let e = namespace_cache_mounts(
            "FROM x\nRUN --mount=\"type=cache,target=/a\" true\n",
            "Dockerfile",
            NS,
        )
        .unwrap_err();
        assert!(e.contains("cannot be told from a cache mount"), "{e}");
        let e = namespace_cache_mounts(
            "FROM x\nARG M=type=cache,target=/a\nRUN --mount=$M true\n",
            "Dockerfile",
            NS,
        )
        .unwrap_err();
        assert!(e.starts_with("Dockerfile:3: "), "{e}");
        // A variable inside a cache mount's id stays inside the namespace.
        check(
            "RUN --mount=type=cache,id=pip-$PY,target=/c true\n",
            &format!("RUN --mount=type=cache,target=/c,id={NS}/pip-$PY true\n"),
            1,
        );
        let e = namespace_cache_mounts(
            "FROM x\nRUN --mount=type=cache,\"target=/a b\" true\n",
            "Dockerfile",
            NS,
        )
        .unwrap_err();
        assert!(
            e.starts_with("Dockerfile:2: `--mount=type=cache,\"target=/a`: a quoted cache mount"),
            "{e}"
        );
        let e = namespace_cache_mounts(
            "FROM x\n\nRUN --mount=type=$T,target=/a true\n",
            "Dockerfile",
            NS,
        )
        .unwrap_err();
        assert!(e.starts_with("Dockerfile:3: "), "{e}");
    }

    #[test]
    fn namespaces_differ_by_repository_not_by_case() {
        let a = cache_namespace("org", "worker-a");
        assert_eq!(a, cache_namespace("Org", "Worker-A"));
        assert_ne!(a, cache_namespace("org", "worker-b"));
        assert_ne!(a, cache_namespace("other", "worker-a"));
        assert!(a.starts_with(CACHE_ID_PREFIX) && a.len() == CACHE_ID_PREFIX.len() + 16);
    }
}
