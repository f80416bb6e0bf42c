"""The access rule for one file (``access.visible_file``) agrees with the rule for many (``visible_files``)."""

import uuid

import pytest
from django.contrib.auth.models import AnonymousUser

from dicom import access
from dicom.tests.factories import DicomFileFactory, UserFactory


@pytest.fixture
def people():
    owner, other, staff = UserFactory(), UserFactory(), UserFactory(is_staff=True)
    return {"owner": owner, "other": other, "staff": staff, "anonymous": AnonymousUser()}


@pytest.fixture
def files(people):
    original = DicomFileFactory(owner=people["owner"])
    # Derived files as a job or an operator makes them: owned by someone else, or by no one.
    derived = DicomFileFactory(owner=people["staff"], source=original)
    derived_of_derived = DicomFileFactory(owner=None, source=derived)
    third_level = DicomFileFactory(owner=None, source=derived_of_derived)
    ownerless = DicomFileFactory(owner=None)
    others = DicomFileFactory(owner=people["other"])
    return [original, derived, derived_of_derived, third_level, ownerless, others]


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["owner", "other", "staff", "anonymous"])
def test_one_file_is_visible_exactly_when_the_rule_for_many_lists_it(people, files, who):
    user = people[who]
    listed = set(access.visible_files(user).values_list("pk", flat=True)) if who != "anonymous" else set()
    for dicom_file in files:
        found = access.visible_file(user, dicom_file.pk)
        assert (found is not None) == (dicom_file.pk in listed), (who, files.index(dicom_file))
        if found is not None:
            assert found.pk == dicom_file.pk


@pytest.mark.django_db
def test_the_owner_sees_their_file_and_two_generations_derived_from_it_but_not_a_third(people, files):
    seen = [access.visible_file(people["owner"], f.pk) is not None for f in files]
    assert seen == [True, True, True, False, False, False]


@pytest.mark.django_db
def test_a_missing_file_is_none_for_staff_and_owners_alike(people, files):
    for who in ("owner", "staff"):
        assert access.visible_file(people[who], uuid.uuid4()) is None
