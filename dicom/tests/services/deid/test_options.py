from dataclasses import FrozenInstanceError, fields

import pytest

from dicom.services.deid import OPTION_NAMES, DeidOptions


def test_option_names_are_the_dataclass_fields_in_order():
    assert tuple(field.name for field in fields(DeidOptions)) == OPTION_NAMES
    assert len(OPTION_NAMES) == 12
    assert not any(getattr(DeidOptions(), name) for name in OPTION_NAMES)


def test_from_names_and_to_names_round_trip():
    options = DeidOptions.from_names(["clean_graphics", "retain_uids"])
    assert options.retain_uids and options.clean_graphics and not options.retain_full_dates
    assert options.to_names() == ["retain_uids", "clean_graphics"]


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="retain_everything"):
        DeidOptions.from_names(["retain_uids", "retain_everything"])


def test_full_and_modified_dates_exclude_each_other():
    with pytest.raises(ValueError, match="retain_full_dates and retain_modified_dates"):
        DeidOptions(retain_full_dates=True, retain_modified_dates=True)
    with pytest.raises(ValueError):
        DeidOptions.from_names(["retain_full_dates", "retain_modified_dates"])


def test_options_are_frozen():
    options = DeidOptions()
    with pytest.raises(FrozenInstanceError):
        options.retain_uids = True


def test_a_request_for_one_alternative_drops_the_default_other():
    defaults = ["clean_pixel_data", "retain_uids"]
    options = DeidOptions.with_overrides(defaults, {"accept_burned_in_annotation": True})
    assert options.to_names() == ["retain_uids", "accept_burned_in_annotation"]
    assert DeidOptions.with_overrides(defaults, {}).to_names() == ["retain_uids", "clean_pixel_data"]
    assert DeidOptions.with_overrides(defaults, {"retain_uids": False}).to_names() == ["clean_pixel_data"]
    dates = DeidOptions.with_overrides(["retain_full_dates"], {"retain_modified_dates": True})
    assert dates.to_names() == ["retain_modified_dates"]
    with pytest.raises(ValueError, match="alternatives"):
        DeidOptions.with_overrides([], {"clean_pixel_data": True, "accept_burned_in_annotation": True})
