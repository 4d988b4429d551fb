#!/usr/bin/env python3
"""janitor's agent: turns /janitor/job.json into a task for Claude Code (headless, in
/workspace), and writes /janitor/result.json under janitord's agent contract.

result.json: {"status": fixed|passed|failed|unfixable|error, "summary", "files", "turns",
"tokens": {input, output, cache_read, cache_creation}, "cost_usd", "model", "tries",
"api_errors"}. `error` is the model API's failure (rate limits, overload, 5xx) after the
retries: the instance's problem, not the repository's, so janitord tries the job again.

Settings (environment): JANITOR_JOB, JANITOR_RESULT, JANITOR_WORKSPACE (the contract);
the model key (ANTHROPIC_API_KEY) or Bedrock credentials (CLAUDE_CODE_USE_BEDROCK=1 with
AWS_* variables), ANTHROPIC_BASE_URL, ANTHROPIC_MODEL; JANITOR_AGENT_RETRIES (default 3) and
JANITOR_AGENT_RETRY_SECONDS (first backoff, default 5, doubled each time).
"""

import hashlib
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = os.path.join(HERE, "prompts")
# The tools Claude Code may use without asking: reading, editing and running commands in the
# workspace. No web access: the repository's text may try to send data out.
TOOLS = ["Bash", "Read", "Edit", "Write", "Glob", "Grep", "LS", "MultiEdit"]
RETRYABLE = {408, 409, 429, 500, 502, 503, 504, 529}
SUMMARY_LIMIT = 500
OUTPUT_TAIL_LINES = 80


def say(text):
    print(f"agent: {text}", flush=True)


def clip(text, limit):
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def section(title, lines):
    lines = [l for l in lines if l]
    if not lines:
        return ""
    return f"### {title}\n\n" + "\n".join(f"- {l}" for l in lines) + "\n"


def render(job):
    """The task for Claude Code, from the versioned prompt files and job.json."""
    mode = job.get("mode", "fix")
    v = job.get("validation") or {}
    steps = v.get("failing_steps") or []
    tests = v.get("failing_tests") or []
    earlier = job.get("earlier_attempts") or []
    fields = {
        "repo": f"{job.get('repo', {}).get('organization', '?')}/{job.get('repo', {}).get('name', '?')}",
        "prompt": job.get("prompt") or "(none)",
        "attempt": job.get("attempt", 1),
        "max_attempts": job.get("max_attempts", 1),
        "status": v.get("status", "failed"),
        "reason": v.get("reason") or "(none given)",
        "passing": clip(v.get("reason") or "every step passed", 2000),
        "failing_steps": section(
            "Failing steps",
            [f"`{s.get('name')}` ({s.get('status')}): {clip(s.get('detail', ''), 1500)}" for s in steps],
        ),
        "failing_tests": section(
            "Failing tests",
            [f"`{t.get('name')}`: {clip(t.get('error') or t.get('status'), 1500)}" for t in tests],
        ),
        "error_lines": section("ERROR lines", [clip(l, 500) for l in (v.get("error_lines") or [])[:20]]),
        "output_tail": "\n".join(clip(l, 300) for l in (job.get("output_tail") or [])[-OUTPUT_TAIL_LINES:]),
        "earlier_attempts": section(
            "Your earlier attempts",
            [
                f"attempt {a.get('attempt')}: you said {clip(((a.get('result') or {}).get('summary')) or '(nothing)', 300)!r}; "
                f"changed files: {'yes' if a.get('changed') else 'no'}; then: {a.get('status') or 'not validated'}"
                f"{' — ' + clip(a.get('reason'), 800) if a.get('reason') else ''}"
                for a in earlier
            ],
        ),
        "runpod": read_prompt("runpod.md"),
    }
    return read_prompt("change.md" if mode == "change" else "fix.md").format(**fields)


def read_prompt(name):
    with open(os.path.join(PROMPTS, name), encoding="utf-8") as f:
        return f.read()


def snapshot(root):
    """path -> sha256 of every regular file under root (links as their target text)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (dirpath == root and d == ".git")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            try:
                if os.path.islink(path):
                    out[rel] = "link:" + os.readlink(path)
                    continue
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = h.hexdigest()
            except OSError:
                out[rel] = "unreadable"
    return out


def progress(event):
    """One short line per assistant step, for janitord's log."""
    if event.get("type") != "assistant":
        return
    for block in (event.get("message") or {}).get("content") or []:
        if block.get("type") == "tool_use":
            inp = block.get("input") or {}
            what = inp.get("command") or inp.get("file_path") or inp.get("pattern") or ""
            say(f"{block.get('name')}: {clip(what, 200)}")
        elif block.get("type") == "text" and block.get("text", "").strip():
            say(clip(block["text"].strip().splitlines()[0], 200))


def run_claude(task, workspace, job):
    """One Claude Code session; its final `result` event (or None) and its exit code."""
    cmd = [
        "claude", "-p", task,
        "--output-format", "stream-json", "--verbose",
        "--max-turns", str(job.get("max_turns", 30)),
        "--allowedTools", *TOOLS,
    ]
    budget = job.get("budget_usd")
    if budget:
        cmd += ["--max-budget-usd", str(budget)]
    env = dict(os.environ)
    env.setdefault("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    env.setdefault("DISABLE_AUTOUPDATER", "1")
    result = None
    proc = subprocess.Popen(cmd, cwd=workspace, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            say(clip(line, 300))
            continue
        if event.get("type") == "result":
            result = event
        else:
            progress(event)
    return result, proc.wait()


def api_error(result):
    """The model API's HTTP status when the session ended on one, else None."""
    if result is None:
        return None
    status = result.get("api_error_status")
    if isinstance(status, int):
        return status
    text = str(result.get("result") or "")
    for code in RETRYABLE:
        if f"API Error: {code}" in text or f'"status":{code}' in text:
            return code
    return None


def add_usage(total, result):
    usage = (result or {}).get("usage") or {}
    for ours, theirs in [("input", "input_tokens"), ("output", "output_tokens"),
                         ("cache_read", "cache_read_input_tokens"),
                         ("cache_creation", "cache_creation_input_tokens")]:
        total[ours] += int(usage.get(theirs) or 0)


def main():
    job_path = os.environ.get("JANITOR_JOB", "/janitor/job.json")
    result_path = os.environ.get("JANITOR_RESULT", "/janitor/result.json")
    workspace = os.environ.get("JANITOR_WORKSPACE", "/workspace")
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    task = render(job)
    say(f"attempt {job.get('attempt', 1)} of {job.get('max_attempts', 1)} ({job.get('mode', 'fix')}): "
        f"{clip(job.get('prompt') or '', 200)}")
    before = snapshot(workspace)
    tries = int(os.environ.get("JANITOR_AGENT_RETRIES", "3"))
    wait = float(os.environ.get("JANITOR_AGENT_RETRY_SECONDS", "5"))
    tokens = {"input": 0, "output": 0, "cache_read": 0, "cache_creation": 0}
    cost, turns, errors, result, model = 0.0, 0, [], None, None
    for n in range(1, tries + 1):
        result, code = run_claude(task, workspace, job)
        add_usage(tokens, result)
        cost += float((result or {}).get("total_cost_usd") or 0)
        turns += int((result or {}).get("num_turns") or 0)
        model = next(iter((result or {}).get("modelUsage") or {}), model)
        status = api_error(result)
        if result is not None and not result.get("is_error"):
            break
        if result is None or status is not None:
            errors.append(status if status is not None else f"exit {code}, no result")
            if n < tries:
                say(f"the model API failed ({errors[-1]}); trying again in {wait:.0f} s")
                time.sleep(wait)
                wait *= 2
                continue
        break
    after = snapshot(workspace)
    files = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    text = str((result or {}).get("result") or "").strip()
    summary = clip(text.splitlines()[0] if text else "(no answer)", SUMMARY_LIMIT)
    if result is None or (result.get("is_error") and api_error(result) is not None):
        status = "error"
        summary = f"the model API failed after {len(errors)} tries: {errors[-1] if errors else 'no answer'}"
    elif result.get("is_error"):
        # Out of turns or budget, or the CLI's own failure: the repository is not fixed.
        status = "failed"
        summary = clip(f"the agent stopped: {result.get('subtype') or 'error'}; {summary}", SUMMARY_LIMIT)
    elif text.upper().startswith("UNFIXABLE"):
        status = "unfixable"
        summary = clip(text.split(":", 1)[-1].strip() or text, SUMMARY_LIMIT)
    elif files:
        status = "fixed"
    else:
        status = "passed" if job.get("mode") == "change" else "failed"
    answer = {
        "status": status,
        "summary": summary,
        "files": files,
        "turns": turns,
        "tokens": tokens,
        "cost_usd": round(cost, 6),
        "model": model,
        "tries": len(errors) + (0 if status == "error" else 1),
        "api_errors": errors,
    }
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(answer, f)
    say(f"{status}: {summary} ({turns} turns, ${cost:.4f}, {len(files)} file(s) changed)")


if __name__ == "__main__":
    sys.exit(main())
