"""The REST API of SEED-API.md: thin views that validate input, call one service, and answer."""

import functools
import io

from django.http import HttpResponse, QueryDict
from rest_framework import viewsets
from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from audit.models import AuditLog
from audit.services import operation
from dicom import access
from dicom.api import reads, schema
from dicom.api import upload as upload_api
from dicom.api.entry import AuditedEntryPoint
from dicom.api.errors import describe
from dicom.api.serializers import (
    UPLOAD_FIELDS,
    AnonymizeBatchSerializer,
    DeidOptionsSerializer,
    RawUploadSerializer,
    UploadSerializer,
)
from dicom.models import DicomFile
from dicom.responses import uuid_or_none
from dicom.services.anonymization import request_anonymization, request_anonymizations
from dicom.services.errors import AccessRefusedError
from dicom.services.selectors import get_visible_file, get_visible_files
from dicom.uploads import stage_stream


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, with nesting too deep for Python's parser a 400 rather than a crash."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None


def audited(action: str):
    """Audit the decorated API action as one operation (``audit.services.operation``).

    Services it calls that audit the same action join it, so each request writes one row: the
    service's success row inside its transaction, or this one's. HEAD reads nothing of a file: it
    is not audited (OPTIONS has its own handler, never decorated).
    """

    def decorate(method):
        @functools.wraps(method)
        def handler(self, request, *args, **kwargs):
            if request.method == "HEAD":
                return method(self, request, *args, **kwargs)
            file_id = uuid_or_none(kwargs.get("file_id"))
            with operation(actor=self.actor(), action=action, file_id=file_id, describe=describe):
                return method(self, request, *args, **kwargs)

        return handler

    return decorate


def _form_and_query(request: Request):
    """A multipart upload's fields: the form's, and the upload fields of its query string.

    A field in both is sent twice (a 400). Other query parameters are left out, as they always were;
    a body that is not a form (JSON) is given to the serializer as it is, to be refused there.
    """
    data = request.data
    if not hasattr(data, "getlist"):
        return data
    fields = QueryDict(mutable=True)
    for name in data:
        fields.setlist(name, data.getlist(name))
    for name in UPLOAD_FIELDS.intersection(request.query_params):
        fields.setlist(name, fields.getlist(name) + request.query_params.getlist(name))
    return fields


def _media_type(request: Request) -> str:
    return (request.content_type or "").split(";", 1)[0].strip().lower()


def _refuse_unless_may_queue(user, source: DicomFile, *, named: bool = False) -> None:
    """Another user's file needs the operator permission; ``named``: the refusal says which file."""
    if not access.may_queue_deidentification(user, source):
        which = f" ({source.id})" if named else ""
        raise AccessRefusedError(
            f"queueing the de-identification of another user's file{which} needs the operator permission "
            "(dicom.operate)"
        )


class DicomViewSet(AuditedEntryPoint, viewsets.ViewSet):
    """Upload, metadata, anonymize, download and status of DICOM files; every call is audited."""

    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]
    audit_actions = {
        "upload": AuditLog.Action.UPLOAD,
        "metadata": AuditLog.Action.METADATA,
        "anonymize": AuditLog.Action.ANONYMIZE,
        "anonymize_batch": AuditLog.Action.ANONYMIZE,
        "download": AuditLog.Action.DOWNLOAD,
        "status": AuditLog.Action.STATUS,
    }

    def refused_action(self, request) -> str | None:
        if request.method in ("OPTIONS", "HEAD"):
            return None
        return self.audit_actions.get(getattr(self, "action", None) or "")

    def refused_file_id(self, kwargs: dict):
        return uuid_or_none(kwargs.get("file_id"))

    @schema.upload
    @audited(AuditLog.Action.UPLOAD)
    def upload(self, request: Request) -> Response:
        upload_api.refuse_declared_length(int(request.META.get("CONTENT_LENGTH") or 0))
        raw = _media_type(request) == "application/dicom"
        # A raw body is the file, its fields the query parameters; a form has both, and may have
        # its fields in the query too.
        if raw:
            serializer = RawUploadSerializer(data=request.query_params)
        else:
            serializer = UploadSerializer(data=_form_and_query(request))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if not raw:
            upload = data["file"]
        else:
            # Staged by the web server as it arrived (dicomsite.server); under WSGI, here. DRF gives
            # no stream for an empty body: an empty file, refused by validation as such.
            upload = getattr(request, "staged_upload", None) or stage_stream(request.stream or io.BytesIO())
        return Response(
            upload_api.store_upload(user=request.user, actor=self.actor(), upload=upload, fields=data)
        )

    @schema.metadata
    @audited(AuditLog.Action.METADATA)
    def metadata(self, request: Request, file_id: str) -> Response:
        return Response(reads.metadata(user=request.user, file_id=file_id))

    @schema.anonymize
    @audited(AuditLog.Action.ANONYMIZE)
    def anonymize(self, request: Request, file_id: str) -> Response:
        source = self._get_file(file_id)
        _refuse_unless_may_queue(request.user, source)
        serializer = DeidOptionsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        derived = request_anonymization(
            actor=self.actor(), source=source, options=serializer.validated_data["options"]
        )
        return Response(
            {
                "message": "DICOM file queued for anonymization",
                "original_file_id": str(source.id),
                "anonymized_file_id": str(derived.id),
                "status": derived.status,
            }
        )

    @schema.anonymize_batch
    @audited(AuditLog.Action.ANONYMIZE)
    def anonymize_batch(self, request: Request) -> Response:
        serializer = AnonymizeBatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        sources = get_visible_files(user=request.user, file_ids=serializer.validated_data["file_ids"])
        for source in sources:
            _refuse_unless_may_queue(request.user, source, named=True)
        derived = request_anonymizations(
            actor=self.actor(), sources=sources, options=serializer.validated_data["options"]
        )
        return Response(
            {
                "message": f"{len(derived)} DICOM files queued for anonymization",
                "files": [
                    {
                        "original_file_id": str(row.source_id),
                        "anonymized_file_id": str(row.id),
                        "status": row.status,
                    }
                    for row in derived
                ],
            }
        )

    @schema.download
    @audited(AuditLog.Action.DOWNLOAD)
    def download(self, request: Request, file_id: str) -> HttpResponse:
        return reads.download(user=request.user, file_id=file_id)

    @schema.status
    @audited(AuditLog.Action.STATUS)
    def status(self, request: Request, file_id: str) -> Response:
        return Response(reads.status(user=request.user, file_id=file_id))

    def _get_file(self, file_id: str) -> DicomFile:
        return get_visible_file(user=self.request.user, file_id=file_id)
