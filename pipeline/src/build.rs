//! The `build` step: the repository's Dockerfile built to the repository's tag through the
//! engine, with the layer cache's hits counted; or, when the build's inputs hash to what the
//! image on the instance was built from (its `janitor.inputs` label), that image reused without
//! a builder round trip.

use std::collections::HashMap;
use std::path::Path;

use janitor_model::config::Builder;
use janitor_model::report::{BuildReport, CacheInfo};
use janitor_services::buildkit::{self, SecretStore};
use janitor_services::engine::{BuildSpec, ContainerEngine, EngineVersions};

use crate::steps::{StepEnv, StepOutcome};

/// What a builder prints when the instance, not the Dockerfile, is the problem.
const INSTANCE_FAILURES: &[&str] = &[
    "no space left on device",
    "dial tcp",
    "i/o timeout",
    "tls handshake timeout",
    "connection reset by peer",
    "temporary failure in name resolution",
    "net/http: request canceled",
];

/// Whether a build failure is the instance's (disk, network) rather than the repository's.
pub fn is_instance_failure(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    INSTANCE_FAILURES.iter().any(|m| lower.contains(m))
}

/// Builds the checkout in `repo_dir` to `tag` from `dockerfile`; the cache figures go into
/// `cache` and what built it into `built`.
pub async fn build<E: ContainerEngine>(
    env: &StepEnv<'_, E>,
    repo_dir: &Path,
    dockerfile: &str,
    tag: &str,
    cache: &mut CacheInfo,
    built: &mut Option<BuildReport>,
) -> StepOutcome {
    let StepEnv {
        engine,
        ctx,
        deadline,
        cancel,
        sink,
    } = *env;
    let spec = &ctx.job.spec;
    let opts = &spec.build;
    let versions = engine.versions();
    *built = Some(BuildReport {
        builder: opts.builder,
        engine_version: versions.engine.clone(),
        api_version: versions.api.clone(),
        buildkit_version: versions.buildkit.clone(),
        target: opts.target.clone(),
        secrets: opts.secrets.clone(),
        inputs: None,
        reused: false,
        reuse: None,
        cache_mounts: 0,
    });
    let text = match crate::files::read_text_by(
        repo_dir,
        dockerfile,
        crate::files::MAX_DOCKERFILE_BYTES,
        deadline,
    )
    .await
    {
        Ok(Some(text)) => text,
        Ok(None) => {
            return StepOutcome::failed(format!(
                "no Dockerfile at `{dockerfile}` in the repository (set `dockerfile:` for another path)"
            ))
        }
        Err(crate::files::FileError::Deadline { .. }) => {
            return StepOutcome::stopped(janitor_services::engine::StopReason::Deadline, spec.timeout)
        }
        Err(e) => return StepOutcome::failed(e.to_string()),
    };
    if let Some(why) = unbuildable(
        &text,
        dockerfile,
        opts.builder,
        !opts.secrets.is_empty(),
        &versions,
    ) {
        return why;
    }
    if opts
        .secrets
        .iter()
        .any(|id| id == janitor_model::audience::PUBLISH_TOKEN)
    {
        return StepOutcome::failed(format!(
            "`build_secrets` names {}, the token that publishes fixes: it is never given to a build (name another secret for what the build needs)",
            janitor_model::audience::PUBLISH_TOKEN
        ));
    }
    // BuildKit shares a cache mount with every build that names the same id (by default its
    // target): each repository's are given ids of its own.
    let sent = match opts.builder {
        Builder::Buildkit => {
            let ns = crate::dockerfile::cache_namespace(&spec.repo.organization, &spec.repo.name);
            match crate::dockerfile::namespace_cache_mounts(&text, dockerfile, &ns) {
                Ok((sent, n)) if n > 0 => {
                    if let Some(b) = built.as_mut() {
                        b.cache_mounts = u32::try_from(n).unwrap_or(u32::MAX);
                    }
                    Some(sent)
                }
                Ok(_) => None,
                Err(why) => return StepOutcome::failed(why),
            }
        }
        Builder::Classic => None,
    };
    let (secrets, values) = match read_secrets(&ctx.secrets_dir, &opts.secrets, &ctx.secrets) {
        Ok(found) => found,
        Err(why) => return StepOutcome::error(why),
    };
    // Only stable labels: a per-job label would make the last build step miss the cache. The
    // inputs' hash is stable for the same inputs, and the classic builder (whose LABEL step it
    // would change) never reuses.
    let mut labels = HashMap::from([("janitor.repo".to_string(), spec.repo.full_name())]);
    if opts.builder == Builder::Buildkit {
        let reuse = reusable(engine, repo_dir, dockerfile, &text, tag, opts).await;
        if let Some(b) = built.as_mut() {
            b.inputs = reuse.hash.clone();
            b.reused = reuse.reused;
            b.reuse = Some(reuse.why.clone());
        }
        if reuse.reused {
            return StepOutcome::succeeded(format!("reused {tag}: {}", reuse.why));
        }
        if let Some(hash) = reuse.hash {
            labels.insert(INPUTS_LABEL.to_string(), hash);
        }
    }
    let redactor = janitor_services::secrets::Redactor::new(values);
    let mut on_line = |l: &str| sink.line(&format!("[build] {}", redactor.redact(l)));
    let build = BuildSpec {
        context_dir: repo_dir,
        dockerfile,
        tag,
        labels,
        builder: opts.builder,
        target: opts.target.as_deref(),
        args: &opts.args,
        secrets,
        dockerfile_text: sent.as_deref(),
    };
    let b = match engine.build(&build, deadline, cancel, &mut on_line).await {
        Err(e) => return StepOutcome::engine(&e),
        Ok(b) => b,
    };
    cache.hits = b.cache_hits;
    cache.steps = b.steps;
    let mut cached = format!("{} of {} steps from the layer cache", b.cache_hits, b.steps);
    if let Some(n) = built.as_ref().map(|b| b.cache_mounts).filter(|n| *n > 0) {
        cached.push_str(&format!(
            "; {n} cache mount(s) kept to this repository's own cache"
        ));
    }
    match (b.stopped, b.error.map(|e| redactor.redact(&e))) {
        (Some(reason), _) => StepOutcome::stopped(reason, spec.timeout),
        (None, Some(err)) if is_instance_failure(&err) => {
            StepOutcome::error(format!("{err} ({cached})"))
        }
        (None, Some(err)) => StepOutcome::failed(format!("{err} ({cached})")),
        (None, None) => StepOutcome::succeeded(format!("built {tag}; {cached}")),
    }
}

/// The label that carries the hash of the inputs an image was built from.
pub const INPUTS_LABEL: &str = "janitor.inputs";

/// Whether the image on the instance can stand for this build.
struct Reuse {
    hash: Option<String>,
    reused: bool,
    why: String,
}

/// The images a Dockerfile's stages start from (not earlier stages, not `scratch`); `Err`
/// names the first that cannot be resolved without building (a build argument in it).
fn from_images(dockerfile_text: &str) -> Result<Vec<String>, String> {
    let mut aliases: Vec<String> = Vec::new();
    let mut images = Vec::new();
    for line in dockerfile_text.lines() {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        let Some(image) = rest.first() else { continue };
        if image.contains('$') {
            return Err(format!("`FROM {image}` uses a build argument"));
        }
        // An earlier stage's name, or an image.
        let lower = image.to_ascii_lowercase();
        if lower != "scratch" && !aliases.contains(&lower) && !images.contains(&image.to_string()) {
            images.push(image.to_string());
        }
        if let (Some(kw), Some(alias)) = (rest.get(1), rest.get(2)) {
            if kw.eq_ignore_ascii_case("AS") {
                aliases.push(alias.to_ascii_lowercase());
            }
        }
    }
    Ok(images)
}

/// What in a Dockerfile a builder re-checks however unchanged the inputs are: `ADD` of a URL
/// or a git repository (the remote content is fetched and compared each build).
fn remote_add(dockerfile_text: &str) -> Option<usize> {
    dockerfile_text.lines().position(|l| {
        let mut w = l.split_whitespace();
        w.next().is_some_and(|i| i.eq_ignore_ascii_case("ADD"))
            && w.filter(|a| !a.starts_with("--")).any(|a| {
                a.starts_with("http://") || a.starts_with("https://") || a.starts_with("git@")
            })
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of a build's inputs: a version, the Dockerfile's path, the target, the build
/// arguments and the secrets' ids (sorted), the base images with their ids, and the context:
/// every entry's relative path, kind, executable bit and content (links by their target, not
/// followed), in name order, the top-level `.git` left out as the context leaves it out.
pub fn inputs_hash(
    context: &std::path::Path,
    dockerfile: &str,
    target: Option<&str>,
    args: &[(String, String)],
    secret_ids: &[String],
    bases: &[(String, String)],
) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    fn field(h: &mut Sha256, tag: &str, value: &[u8]) {
        h.update(tag.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    }
    fn walk(h: &mut Sha256, root: &Path, dir: &Path) -> Result<(), String> {
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            if dir == root && entry.file_name() == ".git" {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel = rel.as_os_str().as_encoded_bytes();
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if meta.file_type().is_symlink() {
                let to = std::fs::read_link(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                field(h, "l", rel);
                field(h, "->", to.as_os_str().as_encoded_bytes());
            } else if meta.is_dir() {
                field(h, "d", rel);
                walk(h, root, &path)?;
            } else if meta.is_file() {
                field(h, "f", rel);
                h.update([u8::from(meta.permissions().mode() & 0o111 != 0)]);
                let mut f = std::fs::File::open(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                h.update(meta.len().to_le_bytes());
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = std::io::Read::read(&mut f, &mut buf)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            } else {
                field(h, "o", rel);
            }
        }
        Ok(())
    }
    let mut h = Sha256::new();
    // 2: cache mounts are sent with the repository's own ids (an image built before that
    // shared them, and is not reused).
    field(&mut h, "janitor-build-inputs", b"2");
    field(&mut h, "dockerfile", dockerfile.as_bytes());
    field(&mut h, "target", target.unwrap_or("").as_bytes());
    let mut args: Vec<&(String, String)> = args.iter().collect();
    args.sort();
    for (k, v) in args {
        field(&mut h, "arg", k.as_bytes());
        field(&mut h, "=", v.as_bytes());
    }
    let mut ids: Vec<&String> = secret_ids.iter().collect();
    ids.sort();
    for id in ids {
        field(&mut h, "secret", id.as_bytes());
    }
    for (image, id) in bases {
        field(&mut h, "from", image.as_bytes());
        field(&mut h, "@", id.as_bytes());
    }
    walk(&mut h, context, context)?;
    Ok(format!("sha256:{}", hex(&h.finalize())))
}

/// Whether the image tagged `tag` was built from exactly these inputs.
async fn reusable<E: ContainerEngine>(
    engine: &E,
    repo_dir: &Path,
    dockerfile: &str,
    text: &str,
    tag: &str,
    opts: &janitor_model::config::BuildOptions,
) -> Reuse {
    let no = |hash: Option<String>, why: String| Reuse {
        hash,
        reused: false,
        why,
    };
    let images = match from_images(text) {
        Ok(i) => i,
        Err(why) => {
            return no(
                None,
                format!("built: {why}, so its base is known only to the builder"),
            )
        }
    };
    let mut bases = Vec::new();
    for image in images {
        match engine.image(&image).await {
            Some(f) => bases.push((image, f.id)),
            None => {
                return no(
                    None,
                    format!("built: the base image {image} is not on this instance"),
                )
            }
        }
    }
    let context = repo_dir.to_path_buf();
    let (df, target, args, ids) = (
        dockerfile.to_string(),
        opts.target.clone(),
        opts.args.clone(),
        opts.secrets.clone(),
    );
    // Measured first: a context over the bound is refused by the build, never read whole.
    let hashed = tokio::task::spawn_blocking(move || {
        janitor_services::disk::tree_bytes(&context, janitor_services::disk::MAX_TREE_BYTES)?;
        inputs_hash(&context, &df, target.as_deref(), &args, &ids, &bases)
    })
    .await;
    let hash = match hashed {
        Ok(Ok(h)) => h,
        Ok(Err(why)) => {
            return no(
                None,
                format!("built: the context could not be hashed: {why}"),
            )
        }
        Err(e) => return no(None, format!("built: the context could not be hashed: {e}")),
    };
    if let Some(line) = remote_add(text) {
        return no(
            Some(hash),
            format!(
                "built: {dockerfile}:{} ADDs from a URL, which the builder checks every build",
                line + 1
            ),
        );
    }
    let earlier = engine
        .image(tag)
        .await
        .and_then(|f| f.labels.get(INPUTS_LABEL).cloned());
    match earlier {
        Some(h) if h == hash => Reuse {
            why: format!(
                "the build's inputs are unchanged ({}: the context, Dockerfile, target, arguments, secrets' ids and base images' ids)",
                short(&hash)
            ),
            hash: Some(hash),
            reused: true,
        },
        Some(h) => no(
            Some(hash.clone()),
            format!(
                "built: the inputs changed since {tag} was built ({} → {})",
                short(&h),
                short(&hash)
            ),
        ),
        None => no(
            Some(hash),
            format!("built: no image of {tag} with known inputs on this instance"),
        ),
    }
}

/// `sha256:` and the first 12 hex digits.
fn short(hash: &str) -> &str {
    &hash[..hash.len().min(19)]
}

/// Why this Dockerfile cannot be built here, before the builder is asked: a heredoc on an
/// engine whose built-in frontend predates them is the instance's problem (`error`); secrets
/// with the classic builder are the repository's (`failed`).
fn unbuildable(
    dockerfile_text: &str,
    dockerfile: &str,
    builder: Builder,
    wants_secrets: bool,
    versions: &EngineVersions,
) -> Option<StepOutcome> {
    if builder == Builder::Classic && wants_secrets {
        return Some(StepOutcome::failed(
            "`build_secrets` need BuildKit, and this repository asks for `builder: classic`; remove one of the two",
        ));
    }
    let (line, instruction) = buildkit::first_heredoc(dockerfile_text)?;
    if builder == Builder::Classic {
        return Some(StepOutcome::failed(format!(
            "{dockerfile}:{line} uses a heredoc (`{instruction}`), which the classic builder cannot parse; remove `builder: classic` to build with BuildKit"
        )));
    }
    let old = buildkit::engine_major(&versions.engine)
        .is_some_and(|major| major < buildkit::HEREDOC_ENGINE_MAJOR);
    (old && !buildkit::has_syntax_directive(dockerfile_text)).then(|| {
        StepOutcome::error(format!(
            "{dockerfile}:{line} uses a heredoc (`{instruction}`), which needs Docker Engine {}.0 or later (its built-in Dockerfile frontend 1.4+); this instance runs Docker Engine {}: run it on an instance from the current AMI",
            buildkit::HEREDOC_ENGINE_MAJOR, versions.engine
        ))
    })
}

/// The build's secrets: the job's own (`secrets:`) by name, else a file per id in `dir` (one
/// trailing newline dropped); with their values for redaction. A missing one is the
/// instance's problem, named with its path.
fn read_secrets(
    dir: &Path,
    ids: &[String],
    job: &janitor_services::secrets::SecretValues,
) -> Result<(SecretStore, Vec<String>), String> {
    let mut found = HashMap::new();
    let mut values = Vec::new();
    for id in ids {
        if let Some(v) = job.get(id) {
            values.push(v.to_string());
            found.insert(id.clone(), v.as_bytes().to_vec());
            continue;
        }
        let path = dir.join(id);
        let mut data = std::fs::read(&path).map_err(|e| {
            format!(
                "build secret `{id}` is not on this instance: cannot read {}: {e} (janitord's secrets_dir holds a file per secret id)",
                path.display()
            )
        })?;
        if data.ends_with(b"\n") {
            data.pop();
        }
        if let Ok(text) = std::str::from_utf8(&data) {
            if !text.is_empty() {
                values.push(text.to_string());
            }
        }
        found.insert(id.clone(), data);
    }
    Ok((SecretStore::new(found), values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(version: &str) -> EngineVersions {
        EngineVersions {
            engine: version.into(),
            api: "1.41".into(),
            buildkit: None,
        }
    }

    #[test]
    fn heredocs_need_a_new_engine_and_secrets_need_buildkit() {
        let df = "FROM x\nRUN <<EOT\necho hi\nEOT\n";
        let old = unbuildable(
            df,
            "Dockerfile",
            Builder::Buildkit,
            false,
            &engine("20.10.24"),
        )
        .expect("refused on 20.10");
        assert_eq!(old.status, janitor_model::report::StepStatus::Error);
        assert!(old.detail.contains("Dockerfile:2 uses a heredoc (`RUN <<EOT`), which needs Docker Engine 23.0 or later"), "{}", old.detail);
        assert!(
            old.detail.contains("Docker Engine 20.10.24"),
            "{}",
            old.detail
        );
        assert!(unbuildable(
            df,
            "Dockerfile",
            Builder::Buildkit,
            false,
            &engine("27.3.1")
        )
        .is_none());
        let own = format!("# syntax=docker/dockerfile:1.7\n{df}");
        assert!(unbuildable(
            &own,
            "Dockerfile",
            Builder::Buildkit,
            false,
            &engine("20.10.24")
        )
        .is_none());
        let classic = unbuildable(df, "Dockerfile", Builder::Classic, false, &engine("27.3.1"))
            .expect("classic");
        assert_eq!(classic.status, janitor_model::report::StepStatus::Failed);
        let secrets = unbuildable(
            "FROM x\n",
            "Dockerfile",
            Builder::Classic,
            true,
            &engine("27.3.1"),
        )
        .expect("secrets");
        assert!(
            secrets.detail.contains("`build_secrets` need BuildKit"),
            "{}",
            secrets.detail
        );
    }

    #[test]
    fn secrets_are_read_by_id_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("HF_TOKEN"), "hf_abc123\n").unwrap();
        let (store, values) =
            read_secrets(dir.path(), &["HF_TOKEN".into()], &Default::default()).unwrap();
        assert_eq!(values, ["hf_abc123"]);
        assert!(!format!("{store:?}").contains("hf_abc123"));
        assert_eq!(
            janitor_services::secrets::Redactor::new(values).redact("token=hf_abc123 ok"),
            "token=*** ok"
        );
        let missing = read_secrets(dir.path(), &["NOPE".into()], &Default::default()).unwrap_err();
        assert!(
            missing.contains("build secret `NOPE` is not on this instance: cannot read"),
            "{missing}"
        );
        assert!(
            missing.contains(&dir.path().join("NOPE").display().to_string()),
            "{missing}"
        );
    }

    #[test]
    fn instance_or_repository() {
        assert!(super::is_instance_failure(
            "failed to register layer: write /usr/lib/x: no space left on device"
        ));
        assert!(super::is_instance_failure("Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host"));
        assert!(!super::is_instance_failure(
            "The command '/bin/sh -c pip install nope' returned a non-zero code: 1"
        ));
        assert!(!super::is_instance_failure(
            "pull access denied for nosuch/image, repository does not exist"
        ));
    }
}

#[cfg(test)]
mod reuse_tests {
    use super::*;

    #[test]
    fn every_input_changes_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM b\n").unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/h.py"), "print(1)\n").unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        let bases = vec![("b".to_string(), "sha256:1".to_string())];
        let args = vec![("A".to_string(), "1".to_string())];
        let ids = vec!["HF_TOKEN".to_string()];
        let h = |t: Option<&str>, a: &[(String, String)], i: &[String], b: &[(String, String)]| {
            inputs_hash(dir.path(), "Dockerfile", t, a, i, b).unwrap()
        };
        let base = h(None, &args, &ids, &bases);
        assert!(base.starts_with("sha256:") && base.len() == 71, "{base}");
        assert_eq!(base, h(None, &args, &ids, &bases), "stable");
        assert_ne!(base, h(Some("final"), &args, &ids, &bases));
        assert_ne!(base, h(None, &[], &ids, &bases));
        assert_ne!(base, h(None, &args, &[], &bases));
        assert_ne!(
            base,
            h(None, &args, &ids, &[("b".into(), "sha256:2".into())])
        );
        // .git is not the context's.
        std::fs::write(dir.path().join(".git/HEAD"), "y").unwrap();
        assert_eq!(base, h(None, &args, &ids, &bases));
        // A file's content, its mode, a new file, a link.
        std::fs::write(dir.path().join("src/h.py"), "print(2)\n").unwrap();
        let changed = h(None, &args, &ids, &bases);
        assert_ne!(base, changed);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("src/h.py"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(changed, h(None, &args, &ids, &bases));
        let before_link = h(None, &args, &ids, &bases);
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        assert_ne!(before_link, h(None, &args, &ids, &bases));
        // A repository's traps: a link to a device and a FIFO are named, never read (a read
        // would never end).
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let with_traps = h(None, &args, &ids, &bases);
        assert_ne!(before_link, with_traps);
    }

    #[test]
    fn bases_and_remote_adds() {
        let df = "FROM python:3.11 AS build\nRUN x\nFROM build AS final\nFROM scratch\nFROM python:3.11\nFROM build\nFROM nvidia/cuda:12.4.1\n";
        assert_eq!(
            from_images(df).unwrap(),
            ["python:3.11", "nvidia/cuda:12.4.1"]
        );
        assert!(from_images("ARG B\nFROM $B\n")
            .unwrap_err()
            .contains("`FROM $B`"));
        assert_eq!(
            remote_add("FROM x\nADD --chmod=644 https://e.com/w.bin /w\n"),
            Some(1)
        );
        assert_eq!(remote_add("FROM x\nADD src /src\n"), None);
    }
}
