#!/usr/bin/env bash
# Start the web server, the background worker and the DIMSE node (DICOM_SCP_HOST:DICOM_SCP_PORT,
# default 127.0.0.1:11112) in the foreground; Ctrl-C (or TERM) stops them all.
set -euo pipefail
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8000}
WEB_WORKERS=${WEB_WORKERS:-3}

# Nothing runs yet: whatever is staged was left by a server or worker that died (partial uploads
# with patient data among them).
"$BIN/python" manage.py sweep_staging --all >/dev/null

"$BIN/gunicorn" dicomsite.asgi:application --config dicomsite/gunicorn.conf.py \
  --bind "127.0.0.1:$PORT" --workers "$WEB_WORKERS" --timeout 300 &
web=$!
# The worker runs in a loop: if it dies (killed, out of memory), it is started again and the API
# stays up; its jobs are taken back by the new worker's reaper.
(
  trap 'kill -TERM "$job" 2>/dev/null; wait "$job"; exit 0' TERM
  while true; do
    "$BIN/python" manage.py db_worker --no-reload &
    job=$!
    wait "$job" && exit 0
    echo "background worker exited ($?); starting it again in 1 s" >&2
    sleep 1
  done
) &
worker=$!
# The DIMSE node, restarted the same way. One that cannot listen (the port is taken) stops
# everything, as the web server would: a service half up is worse than one that says why it is not.
(
  trap 'kill -TERM "$node" 2>/dev/null; wait "$node"; exit 0' TERM
  while true; do
    "$BIN/python" manage.py dicom_scp &
    node=$!
    wait "$node" && exit 0
    code=$?
    if [ "$code" -eq 3 ]; then
      kill -TERM $$
      exit 3
    fi
    echo "DIMSE node exited ($code); starting it again in 1 s" >&2
    sleep 1
  done
) &
node=$!

stop() {
  trap - INT TERM
  kill -TERM "$web" "$worker" "$node" 2>/dev/null || true
  wait "$web" "$worker" "$node" 2>/dev/null || true
}
trap stop INT TERM
echo "DICOM service on http://127.0.0.1:$PORT/ (admin at /admin/), DIMSE on ${DICOM_SCP_HOST:-127.0.0.1}:${DICOM_SCP_PORT:-11112}; Ctrl-C stops them all"
# If the web server stops, everything stops; the worker is restarted by its loop above.
wait "$web" || true
stop
