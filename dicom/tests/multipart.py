"""The multipart/form-data bodies the live-server tests send over raw sockets (Django's test client builds its own)."""

BOUNDARY = "dicom-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def multipart_head(**fields: str) -> bytes:
    """The form fields, then the file part's headers: what comes before the file's bytes."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.dcm"\r\n'
        "Content-Type: application/dicom\r\n\r\n"
    )
    return "".join(parts).encode()


def multipart(payload: bytes, **fields: str) -> bytes:
    """A whole upload body: ``fields`` and ``payload`` as the ``file`` part."""
    return multipart_head(**fields) + payload + TAIL
