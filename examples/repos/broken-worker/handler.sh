. /config.env
if [ -f "$MODEL" ]; then
  echo "loaded $MODEL"
  echo '{"output": "hello"}'
else
  echo "ERROR: model $MODEL not found"
  exit 1
fi
