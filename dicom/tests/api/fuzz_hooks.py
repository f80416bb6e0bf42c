"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=dicom.tests.api.fuzz_hooks``) that let the fuzzer past 404s.

Random bytes are never DICOM and random UUIDs name no file, so on its own the fuzzer would only see
refusals. These hooks mix in what a real client sends: the uploads sometimes carry a real DICOM file
(``DICOM_FUZZ_UPLOAD``, a path) and a file id is sometimes one of the files that exist
(``DICOM_FUZZ_FILE_IDS``, comma-separated), in a path or in the batch anonymize's ``file_ids``. Everything else stays as schemathesis generates it.
No Django here: this runs in schemathesis's process, not the server's.
"""

import os
from functools import cache
from pathlib import Path

import schemathesis
from hypothesis import strategies as st

# The raw upload's body is bytes as they are; without this schemathesis skips that media type.
schemathesis.serializer.alias("application/dicom", "application/octet-stream")


@cache
def _upload_bytes() -> bytes | None:
    path = os.environ.get("DICOM_FUZZ_UPLOAD")
    return Path(path).read_bytes() if path else None


def _file_ids() -> list[str]:
    return [value for value in os.environ.get("DICOM_FUZZ_FILE_IDS", "").split(",") if value]


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    known = _file_ids()
    if not known or "file_id" not in (path_parameters or {}):
        return st.just(path_parameters)
    return st.one_of(
        st.just(path_parameters),
        st.sampled_from(known).map(lambda file_id: {**path_parameters, "file_id": file_id}),
    )


@schemathesis.hook
def flatmap_body(context, body):
    payload = _upload_bytes()
    operation = context.operation
    known = _file_ids()
    if operation is not None and operation.path.endswith("/anonymize") and known and isinstance(body, dict):
        # The batch request: sometimes it names a file that exists.
        return st.one_of(
            st.just(body), st.sampled_from(known).map(lambda file_id: {**body, "file_ids": [file_id]})
        )
    if payload is None or operation is None or not operation.path.endswith("/upload"):
        return st.just(body)
    if isinstance(body, bytes):  # the raw application/dicom form
        return st.one_of(st.just(body), st.just(payload))
    if not isinstance(body, dict) or not isinstance(body.get("file"), bytes | str):
        return st.just(body)
    return st.one_of(st.just(body), st.just({**body, "file": payload}))
