import factory

from dicom.tests.factories import UserFactory
from dimse.models import ApplicationEntity


class ApplicationEntityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApplicationEntity

    ae_title = factory.Sequence(lambda n: f"MODALITY{n}")
    account = factory.SubFactory(UserFactory)
    may_store = True
