"""Settings that every request would fail on stop start-up with a clear message."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from dicom.apps import check_default_options


def test_default_options_are_checked_at_start_up(settings):
    settings.DICOM_DEID_DEFAULT_OPTIONS = ["retain_uids", "clean_pixel_data"]
    check_default_options()
    settings.DICOM_DEID_DEFAULT_OPTIONS = ["retain_everything"]
    with pytest.raises(ImproperlyConfigured, match=r"retain_everything.*known options: retain_full_dates"):
        check_default_options()
    settings.DICOM_DEID_DEFAULT_OPTIONS = ["clean_pixel_data", "accept_burned_in_annotation"]
    with pytest.raises(ImproperlyConfigured, match="alternatives"):
        check_default_options()
