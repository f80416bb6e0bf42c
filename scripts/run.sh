#!/usr/bin/env bash
# Start the web server and the background worker in the foreground; Ctrl-C (or TERM) stops both.
set -euo pipefail
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8000}
WEB_WORKERS=${WEB_WORKERS:-3}
WEB_THREADS=${WEB_THREADS:-2}

# Nothing runs yet: whatever is staged was left by a server or worker that died (partial uploads
# with patient data among them).
"$BIN/python" manage.py sweep_staging --all >/dev/null

"$BIN/gunicorn" dicomsite.wsgi:application --config dicomsite/gunicorn.conf.py \
  --bind "127.0.0.1:$PORT" \
  --workers "$WEB_WORKERS" --worker-class gthread --threads "$WEB_THREADS" \
  --timeout 300 &
web=$!
"$BIN/python" manage.py db_worker --no-reload &
worker=$!

stop() {
  trap - INT TERM
  kill -TERM "$web" "$worker" 2>/dev/null || true
  wait "$web" "$worker" 2>/dev/null || true
}
trap stop INT TERM
echo "DICOM service on http://127.0.0.1:$PORT/ (admin at /admin/); Ctrl-C stops the server and the worker"
# Whichever stops first takes the other down with it.
wait -n "$web" "$worker" || true
stop
