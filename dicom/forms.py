"""Forms of the staff admin."""

from django import forms
from django.conf import settings

from dicom.services.deid import OPTION_NAMES, DeidOptions

# What each option does, in the words of PS3.15 (CID 7050) or of the service.
OPTION_HELP: dict[str, str] = {
    "retain_full_dates": "Retain Longitudinal Temporal Information, Full Dates (113106)",
    "retain_modified_dates": "Retain Longitudinal Temporal Information, Modified Dates (113107)",
    "retain_patient_characteristics": "Retain Patient Characteristics (113108)",
    "retain_device_identity": "Retain Device Identity (113109)",
    "retain_institution_identity": "Retain Institution Identity (113112)",
    "retain_uids": "Retain UIDs (113110)",
    "retain_safe_private": "Retain Safe Private (113111)",
    "clean_descriptors": "Clean Descriptors (113105)",
    "clean_structured_content": "Clean Structured Content (113104)",
    "clean_graphics": "Clean Graphics (113103)",
    "clean_pixel_data": "Clean Pixel Data (113101): blank burned-in text found in the pixels (refused otherwise)",
    "accept_burned_in_annotation": (
        "Keep the pixels as they are, burned-in text included (Patient Identity Removed is then NO)"
    ),
}


class DeidOptionsForm(forms.Form):
    """One checkbox per de-identification option; ``cleaned_data["options"]`` is a ``DeidOptions``.

    The initial state is ``DICOM_DEID_DEFAULT_OPTIONS``, the same default the API applies.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        defaults = set(settings.DICOM_DEID_DEFAULT_OPTIONS)
        for name in OPTION_NAMES:
            self.fields[name] = forms.BooleanField(
                required=False,
                initial=name in defaults,
                label=name.replace("_", " ").capitalize(),
                help_text=OPTION_HELP.get(name, ""),
            )

    def clean(self) -> dict:
        cleaned = super().clean()
        chosen = [name for name in OPTION_NAMES if cleaned.get(name)]
        try:
            cleaned["options"] = DeidOptions.from_names(chosen)
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None
        return cleaned
