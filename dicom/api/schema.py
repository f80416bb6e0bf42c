"""The OpenAPI description of the API (drf-spectacular), kept apart so that the views stay thin.

Bodies are described by documentation-only serializers built from the same names the code answers
with (``METADATA_KEYWORDS``, ``OPTION_NAMES``, ``DicomFile.Status``), so a key added there shows up
here. Each operation lists every status code it can answer; every error has the seed's shape.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from pydicom.datadict import dictionary_VR
from rest_framework import serializers

from dicom.models import DicomFile
from dicom.services.deid import OPTION_NAMES
from dicom.services.metadata import METADATA_KEYWORDS

_INTEGER_VRS = {"US", "SS", "UL", "SL", "IS"}
_STATUSES = [choice.value for choice in DicomFile.Status]


def _one_or_many(item_type: str) -> dict:
    # A multi-valued attribute comes as a list; an absent one as null.
    return {"nullable": True, "oneOf": [{"type": item_type}, {"type": "array", "items": {"type": item_type}}]}


@extend_schema_field(_one_or_many("string"))
class _TextValue(serializers.Field):
    pass


@extend_schema_field(_one_or_many("integer"))
class _IntegerValue(serializers.Field):
    pass


@extend_schema_field(OpenApiTypes.BINARY)
class _FilePart(serializers.FileField):
    pass


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What is wrong; never patient data.")


class MetadataSerializer(serializers.Serializer):
    """The flat metadata object (see the README's table): the header values and the service's own."""

    def get_fields(self):
        fields = {}
        for key, keyword in METADATA_KEYWORDS.items():
            field = _IntegerValue if dictionary_VR(keyword) in _INTEGER_VRS else _TextValue
            fields[key] = field(help_text=f"{keyword}; dates ISO 8601, times HH:MM:SS[.ffffff]")
        fields["transfer_syntax_uid"] = serializers.CharField(
            allow_null=True, help_text="file meta (0002,0010)"
        )
        fields["file_id"] = serializers.UUIDField()
        fields["study_type"] = serializers.CharField()
        fields["anonymized"] = serializers.BooleanField(help_text="true for a de-identified file")
        fields["size"] = serializers.IntegerField(allow_null=True, help_text="bytes stored")
        return fields


class UploadResponseSerializer(serializers.Serializer):
    message = serializers.CharField()
    file_id = serializers.UUIDField()
    metadata = MetadataSerializer()
    status = serializers.ChoiceField(choices=_STATUSES)


class AnonymizeResponseSerializer(serializers.Serializer):
    message = serializers.CharField()
    original_file_id = serializers.UUIDField()
    anonymized_file_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=_STATUSES)


class AnonymizedFileSerializer(serializers.Serializer):
    original_file_id = serializers.UUIDField()
    anonymized_file_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=_STATUSES)


class AnonymizeBatchResponseSerializer(serializers.Serializer):
    message = serializers.CharField()
    files = AnonymizedFileSerializer(many=True, help_text="one per file named, in the order named")


class AnonymizeBatchRequestSerializer(serializers.Serializer):
    """The files to de-identify (each once) and the options, as for one file."""

    def get_fields(self):
        return {
            "file_ids": serializers.ListField(
                child=serializers.UUIDField(), help_text="at most DICOM_ANONYMIZE_BATCH_MAX, each once"
            ),
            **_options_fields(),
        }


class StatusResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=_STATUSES)
    file_id = serializers.UUIDField()
    detail = serializers.CharField(required=False, help_text="why it failed; only for a failed file")
    source_file_id = serializers.UUIDField(required=False, help_text="the source; only for a derived file")


def _options_fields() -> dict:
    return {
        name: serializers.BooleanField(
            required=False, help_text="a PS3.15 option (see the README); not sent: the configured default"
        )
        for name in OPTION_NAMES
    }


class DeidOptionsRequestSerializer(serializers.Serializer):
    """The de-identification options; ``retain_full_dates``/``retain_modified_dates`` and
    ``clean_pixel_data``/``accept_burned_in_annotation`` are alternatives (both true: 400)."""

    def get_fields(self):
        return _options_fields()


class UploadRequestSerializer(serializers.Serializer):
    """A DICOM file and how to store it; the options apply with ``anonymize=true``."""

    def get_fields(self):
        return {
            "file": _FilePart(help_text="the DICOM file (Part 10)"),
            "anonymize": serializers.BooleanField(
                required=False, default=False, help_text="de-identify before anything is stored"
            ),
            "study_type": serializers.RegexField(
                r"^[a-z][a-z0-9_-]{0,31}$", required=False, default="general", help_text="a short label"
            ),
            **_options_fields(),
        }


_UNAVAILABLE = "the database cannot be reached; try again (Retry-After)"


def _errors(**described: str) -> dict:
    """The error responses of an operation; every one can also answer 503 while its database is away."""
    return {
        int(code.removeprefix("e")): OpenApiResponse(ErrorSerializer, description=text)
        for code, text in {**described, "e503": _UNAVAILABLE}.items()
    }


_FILE_ID = OpenApiParameter(
    "file_id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="The file's id (a UUID); anything else answers 404.",
)
_UNAUTHORIZED = "no or bad credentials"
_NOT_FOUND = "no such file, or not yours (the two look the same); also an id that is not a UUID"
_BAD_FORM = "a field that is invalid, unknown or sent twice; both options of an alternative; a malformed body"
_UNSUPPORTED = "a body in a media type the endpoint does not read"
_CSRF = "a session without its CSRF token"

_UPLOAD_QUERY_PARAMETERS = [
    OpenApiParameter(
        name,
        OpenApiTypes.BOOL if name != "study_type" else OpenApiTypes.STR,
        OpenApiParameter.QUERY,
        required=False,
        description=f"the field {name}: here with an application/dicom body; here or in the form with a "
        "multipart one",
    )
    for name in ("anonymize", "study_type", *OPTION_NAMES)
]

upload = extend_schema(
    operation_id="upload",
    tags=["dicom"],
    description="Streams the file to staging, validates it in one walk (pixel data is never decoded), "
    "optionally de-identifies it before anything is stored, and answers its metadata. Nothing is left "
    "behind by a refused upload. The body is either a multipart form (the file and the fields) or the "
    "file itself (`Content-Type: application/dicom`), the fields then as query parameters; the "
    "answer is the same. With a multipart body the fields may come in the query too (not in both: 400).",
    summary="Upload a DICOM file (optionally de-identified before it is stored)",
    request={"multipart/form-data": UploadRequestSerializer, "application/dicom": OpenApiTypes.BINARY},
    parameters=_UPLOAD_QUERY_PARAMETERS,
    responses={
        200: UploadResponseSerializer,
        **_errors(
            e400=f"not DICOM, truncated, malformed or refused by the de-identification engine; {_BAD_FORM}",
            e401=_UNAUTHORIZED,
            e403=_CSRF,
            e413="the upload exceeds DICOM_MAX_UPLOAD_SIZE, or its form fields the request size bound",
            e415=_UNSUPPORTED,
            e422="the de-identified output failed verification and was not released",
        ),
    },
)
metadata = extend_schema(
    operation_id="metadata",
    tags=["dicom"],
    description="The flat metadata object of a completed file, the one the upload answers. Staff without "
    "dicom.view_phi see an original's patient data masked.",
    summary="The metadata of a stored file",
    parameters=[_FILE_ID],
    responses={
        200: MetadataSerializer,
        **_errors(
            e401=_UNAUTHORIZED, e404=_NOT_FOUND, e409="the file is still processing, or its job failed"
        ),
    },
)
anonymize = extend_schema(
    operation_id="anonymize",
    tags=["dicom"],
    description="Creates the de-identified file's row (processing) and its job in one transaction; the "
    "worker does the work. The body (optional) picks options; an option not sent takes the default.",
    summary="Queue the de-identification of a stored file (the worker does it)",
    parameters=[_FILE_ID],
    request={
        "application/json": DeidOptionsRequestSerializer,
        "application/x-www-form-urlencoded": DeidOptionsRequestSerializer,
        "multipart/form-data": DeidOptionsRequestSerializer,
    },
    responses={
        200: AnonymizeResponseSerializer,
        **_errors(
            e400=_BAD_FORM,
            e401=_UNAUTHORIZED,
            e403=f"another user's file without the operator permission (dicom.operate); {_CSRF}",
            e404=_NOT_FOUND,
            e409="the file is not completed (still processing, or its job failed)",
            e413="the body exceeds the request size bound",
            e415=_UNSUPPORTED,
        ),
    },
)
anonymize_batch = extend_schema(
    operation_id="anonymize_batch",
    tags=["dicom"],
    description="Many files in one request: every file is checked first (nothing is written when one "
    "is refused), then their de-identified rows, their jobs (one per DICOM_ANONYMIZE_BATCH_JOB_SIZE "
    "files) and one audit row per file commit together. Each new file is then followed as one queued "
    "alone: its status, metadata and download.",
    summary="Queue the de-identification of many stored files (one worker job per batch)",
    request={"application/json": AnonymizeBatchRequestSerializer},
    responses={
        200: AnonymizeBatchResponseSerializer,
        **_errors(
            e400=f"no files, more than DICOM_ANONYMIZE_BATCH_MAX, one named twice, or not a UUID; {_BAD_FORM}",
            e401=_UNAUTHORIZED,
            e403=f"another user's file without the operator permission (dicom.operate); {_CSRF}",
            e404="one of the files does not exist or is not yours (named in the detail)",
            e409="one of the files is not completed (named in the detail)",
            e413="the body exceeds the request size bound",
            e415=_UNSUPPORTED,
        ),
    },
)
download = extend_schema(
    operation_id="download",
    tags=["dicom"],
    description="Streams the stored file as an attachment named after its id (never the client's filename).",
    summary="The stored file, as application/dicom",
    parameters=[_FILE_ID],
    responses={
        (200, "application/dicom"): OpenApiResponse(
            OpenApiTypes.BINARY, description="the stored bytes, named <file_id>.dcm"
        ),
        **_errors(
            e401=_UNAUTHORIZED,
            e403="an original with patient data, for staff without dicom.view_phi",
            e404=_NOT_FOUND,
            e409="the file is still processing, or its job failed",
        ),
    },
)
status = extend_schema(
    operation_id="status",
    tags=["dicom"],
    description="processing, completed or failed; a failed file adds why, a derived file its source.",
    summary="The processing status of a file",
    parameters=[_FILE_ID],
    responses={200: StatusResponseSerializer, **_errors(e401=_UNAUTHORIZED, e404=_NOT_FOUND)},
)


class CachedTokenScheme(OpenApiAuthenticationExtension):
    """``Authorization: Token <key>`` (the API's cached token authentication)."""

    target_class = "dicom.api.authentication.CachedTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'A token, sent as "Token <key>" (manage.py drf_create_token USER prints one).',
        }


def seed_paths_only(endpoints):
    """Preprocessing hook: the API's paths as SEED-API.md writes them, without the optional slash.

    The URL patterns are regular expressions that take an optional trailing slash; the schema
    names each path once, the way the contract does.
    """
    return [(path.removesuffix("/"), *rest) for path, *rest in endpoints if path.startswith("/api/dicom/")]


# OpenAPI links: the id an answer names is the file_id of the operations that follow it.
_LINKS = {
    ("/api/dicom/upload", "post"): (
        "$response.body#/file_id",
        ("metadata", "anonymize", "download", "status"),
    ),
    ("/api/dicom/anonymize/{file_id}", "post"): (
        "$response.body#/anonymized_file_id",
        ("status", "metadata", "download", "anonymize"),
    ),
}


def closed_objects_and_links(result, generator, request, public):
    """Postprocessing hook: no body object takes keys it does not list, as the API answers and accepts
    exactly the keys of its contract (an unknown request field is a 400); the answers that name a new
    file link to the operations on it."""
    for component in result.get("components", {}).get("schemas", {}).values():
        if component.get("type") == "object":
            component["additionalProperties"] = False
    for (path, method), (source, targets) in _LINKS.items():
        ok = result["paths"][path][method]["responses"]["200"]
        ok["links"] = {
            f"{target}_it": {"operationId": target, "parameters": {"file_id": source}} for target in targets
        }
    return result
