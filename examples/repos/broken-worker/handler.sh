#!/bin/sh
# The worker's handler: loads the model config.env names, and fails when it is not there.
# shellcheck source=/dev/null
. /config.env
if [ -f "$MODEL" ]; then
  echo "loaded $MODEL"
  echo '{"output": "hello"}'
else
  echo "ERROR: model $MODEL not found"
  exit 1
fi
