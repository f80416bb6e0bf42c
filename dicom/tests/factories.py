import factory
from django.contrib.auth import get_user_model

from dicom.models import DicomFile


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("a-long-test-password")


class DicomFileFactory(factory.django.DjangoModelFactory):
    """A row only (no stored bytes): for listing, filtering and access-rule tests."""

    class Meta:
        model = DicomFile

    owner = factory.SubFactory(UserFactory)
    status = DicomFile.Status.COMPLETED
    study_type = "general"
    modality = "CT"
    size = 1024
    metadata = factory.LazyAttribute(lambda o: {"modality": o.modality})
