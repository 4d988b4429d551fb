#!/bin/sh
# Stands in for a worker's handler: answers one request and exits.
echo "worker starting"
echo '{"input": {"prompt": "hello"}}' | while read -r request; do
  echo "handled: $request"
done
echo "worker finished"
