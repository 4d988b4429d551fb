#!/bin/sh
# Inputs: $JANITOR_PROMPT, the repository at $JANITOR_WORKSPACE, earlier steps in $JANITOR_STEPS.
# Output: one JSON document at $JANITOR_OUTPUT, merged into the report under `agent`.
set -eu
echo "agent: prompt: $JANITOR_PROMPT"
failed=$(grep -o '"status":"failed"' "$JANITOR_STEPS" | wc -l)
files=$(find "$JANITOR_WORKSPACE" -type f | wc -l)
if [ "$failed" -eq 0 ]; then verdict="working"; else verdict="needs-fix"; fi
echo "agent: $files files in the repository, $failed failed step(s): $verdict"
printf '{"verdict":"%s","failed_steps":%s,"files_seen":%s,"changes":[]}\n' "$verdict" "$failed" "$files" >"$JANITOR_OUTPUT"
