"""Input forms of the API: what a client may send, checked before any service runs."""

from django.conf import settings
from rest_framework import serializers

from dicom.services.deid import OPTION_NAMES, DeidOptions

_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


class StrictBooleanField(serializers.Field):
    """A boolean that accepts exactly ``true``, ``false``, ``1`` and ``0`` (any case); an empty value
    sent is an error, not "false" (DRF would take an empty form value for "not sent")."""

    default_error_messages = {"invalid": "must be one of true, false, 1, 0"}

    def get_value(self, dictionary):
        if self.field_name in dictionary and dictionary.get(self.field_name) == "":
            return ""
        return super().get_value(dictionary)

    def to_internal_value(self, data) -> bool:
        if isinstance(data, bool):
            return data
        text = str(data).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        self.fail("invalid")

    def to_representation(self, value):
        return bool(value)


class StrictFieldsSerializer(serializers.Serializer):
    """Refuses what a client cannot have meant: a field it does not know, or a field sent twice."""

    def to_internal_value(self, data):
        known = set(self.fields)
        keys = list(data.keys()) if hasattr(data, "keys") else []
        unknown = sorted(str(key) for key in keys if key not in known)
        if unknown:
            raise serializers.ValidationError(
                {
                    "non_field_errors": [
                        f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
                    ]
                }
            )
        if hasattr(data, "getlist"):
            repeated = sorted(key for key in keys if len(data.getlist(key)) > 1)
            if repeated:
                raise serializers.ValidationError(
                    {"non_field_errors": [f"field(s) sent more than once: {', '.join(repeated)}"]}
                )
        return super().to_internal_value(data)


class DeidOptionsSerializer(StrictFieldsSerializer):
    """The de-identification options; an option not sent takes the configured default."""

    def get_fields(self):
        fields = super().get_fields()
        fields.update({name: StrictBooleanField(required=False) for name in OPTION_NAMES})
        return fields

    def validate(self, attrs):
        overrides = {name: value for name, value in attrs.items() if name in OPTION_NAMES}
        try:
            attrs["options"] = DeidOptions.with_overrides(settings.DICOM_DEID_DEFAULT_OPTIONS, overrides)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None
        return attrs


class RawUploadSerializer(DeidOptionsSerializer):
    """The query parameters of an upload whose body is the DICOM file (``application/dicom``)."""

    anonymize = StrictBooleanField(required=False, default=False)
    study_type = serializers.RegexField(
        r"^[a-z][a-z0-9_-]{0,31}$",
        required=False,
        default="general",
        error_messages={"invalid": "must be a short lowercase label (a-z, 0-9, '-', '_'; at most 32)"},
    )


# What a raw upload reads from its query string (and a multipart one from its form).
UPLOAD_FIELDS = frozenset(RawUploadSerializer().fields)


class UploadSerializer(RawUploadSerializer):
    """The form of a multipart upload: the file and the same fields."""

    file = serializers.FileField(allow_empty_file=True, use_url=False)


class AnonymizeBatchSerializer(DeidOptionsSerializer):
    """``POST /api/dicom/anonymize``: the files to de-identify (each at most once) and the options."""

    file_ids = serializers.ListField(
        child=serializers.UUIDField(error_messages={"invalid": "each must be a file id (a UUID)"}),
        allow_empty=False,
        error_messages={"empty": "name at least one file", "not_a_list": "must be a list of file ids"},
    )

    def validate_file_ids(self, value):
        limit = settings.DICOM_ANONYMIZE_BATCH_MAX
        if len(value) > limit:
            raise serializers.ValidationError(
                f"at most {limit} files in one request (DICOM_ANONYMIZE_BATCH_MAX)"
            )
        if len(set(value)) != len(value):
            raise serializers.ValidationError("names a file more than once")
        return value
