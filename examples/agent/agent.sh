#!/bin/sh
# The example agent, following janitord's agent contract (README: "The agent container"):
#   in:  the checkout, read-write, at $JANITOR_WORKSPACE (/workspace); the job and the failed
#        validation in $JANITOR_JOB (/janitor/job.json); the round in $JANITOR_ATTEMPT.
#   out: $JANITOR_RESULT (/janitor/result.json): {"status": passed|fixed|failed|unfixable,
#        "summary": "..."}; any other fields are kept in the report.
# A real agent (an LLM coding agent) reads the failure and edits the checkout. This one
# stands in for it offline: it applies the fix a repository suggests in
# .janitor/suggested.patch, and says `unfixable` when there is none.
set -eu
reason=$(sed -n 's/.*"reason":"\([^"]*\)".*/\1/p' "$JANITOR_JOB" | head -n 1)
echo "agent: attempt $JANITOR_ATTEMPT: $JANITOR_PROMPT"
echo "agent: the validation says: ${reason:-nothing}"
cd "$JANITOR_WORKSPACE"
if [ -f .janitor/suggested.patch ] && patch -p1 --dry-run <.janitor/suggested.patch >/dev/null 2>&1; then
  patch -p1 <.janitor/suggested.patch
  echo "agent: applied .janitor/suggested.patch"
  printf '{"status":"fixed","summary":"applied the suggested patch","files":["%s"]}\n' \
    "$(sed -n 's#^+++ b/##p' .janitor/suggested.patch | head -n 1)" >"$JANITOR_RESULT"
else
  echo "agent: no fix to apply"
  printf '{"status":"unfixable","summary":"no fix known for: %s"}\n' "${reason:-the failure}" >"$JANITOR_RESULT"
fi
