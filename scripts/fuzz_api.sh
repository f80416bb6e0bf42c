#!/usr/bin/env bash
# The long schemathesis run: a throwaway service (scripts/run.sh on SQLite under a temporary
# directory), one user with a token, one stored original and one queued de-identification, then
# `st run` from the live /api/schema/ with FUZZ_EXAMPLES examples per operation (default 500) and
# the same checks as dicom/tests/api/test_fuzz.py. FUZZ_SEED repeats a run; extra arguments go to
# `st run` (e.g. --checks all). Prints the figures; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(cd "${BIN:-.venv/bin}" && pwd)
EXAMPLES=${FUZZ_EXAMPLES:-500}
SEED=${FUZZ_SEED:-$RANDOM$RANDOM}
WORK=$(mktemp -d /tmp/dicom-fuzz-XXXXXX)
PORT=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DICOM_DATA_DIR="$WORK/data" DJANGO_LOG_LEVEL=WARNING PORT BIN
unset DATABASE_URL DJANGO_SETTINGS_MODULE
server=""
cleanup() {
  [ -n "$server" ] && kill -INT -- "-$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/python" manage.py migrate -v 0
TOKEN=$("$BIN/python" manage.py shell -v 0 -c "from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
print(Token.objects.create(user=User.objects.create_user('fuzzer')).key)" | tail -n 1)
setsid scripts/run.sh >"$WORK/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/api/schema/" && break; sleep 0.2; done

CT=$("$BIN/python" -c 'from pydicom.data import get_testdata_file; print(get_testdata_file("CT_small.dcm"))')
json_field() { "$BIN/python" -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
ORIGINAL=$(curl -fs -H "Authorization: Token $TOKEN" -F "file=@$CT" "http://127.0.0.1:$PORT/api/dicom/upload" | json_field file_id)
DERIVED=$(curl -fs -X POST -H "Authorization: Token $TOKEN" "http://127.0.0.1:$PORT/api/dicom/anonymize/$ORIGINAL" |
  json_field anonymized_file_id)

status=0
# From $WORK: schemathesis keeps its replay records (.schemathesis/) in its working directory.
ROOT=$PWD
cd "$WORK"
PYTHONPATH=$ROOT SCHEMATHESIS_HOOKS=dicom.tests.api.fuzz_hooks DICOM_FUZZ_UPLOAD=$CT \
  DICOM_FUZZ_FILE_IDS="$ORIGINAL,$DERIVED" \
  "$BIN/st" run "http://127.0.0.1:$PORT/api/schema/" --header "Authorization: Token $TOKEN" \
  --max-examples "$EXAMPLES" --seed "$SEED" --request-timeout 30 \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --report json --report-json-path "$WORK/report.json" "$@" || status=$?
"$BIN/python" - "$WORK/report.json" <<'PY'
import json, sys
figures = json.load(open(sys.argv[1]))
cases = figures["test_cases"]
print(
    f"schemathesis: {figures['operations']['tested']} operations, {cases['generated']} test cases, "
    f"{cases['unique_failures']} unique failures, {len(figures['errors'])} errors, "
    f"{figures['running_time']:.0f} s, seed {figures['seed']}"
)
PY
exit $status
