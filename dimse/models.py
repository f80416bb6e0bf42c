"""The DICOM application entities (AEs) the DIMSE node talks to."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


def validate_ae_title(value: str) -> None:
    """An AE title (PS3.5 6.2, VR AE): 1 to 16 characters, no backslash, no control characters,
    not only spaces (leading and trailing spaces are not significant and are not stored)."""
    if not value.strip():
        raise ValidationError("an AE title cannot be empty or only spaces")
    if value != value.strip():
        raise ValidationError("an AE title is stored without leading or trailing spaces")
    if len(value) > 16:
        raise ValidationError("an AE title has at most 16 characters")
    if "\\" in value or any(ord(char) < 0x20 or ord(char) > 0x7E for char in value):
        raise ValidationError("an AE title holds printable ASCII characters other than backslash")


class ApplicationEntity(models.Model):
    """A remote DICOM node (modality, PACS, workstation) known by its AE title.

    An association whose calling AE title is an enabled entity acts as the entity's ``account``
    (its files are that account's, its audit rows name it); ``may_store`` allows C-STORE,
    ``may_query`` C-FIND and ``may_retrieve`` C-MOVE and C-GET. ``host`` and ``port`` are where
    the entity listens: an enabled entity with both is a C-MOVE destination.
    """

    ae_title = models.CharField("AE title", max_length=16, unique=True, validators=[validate_ae_title])
    description = models.CharField(max_length=255, blank=True)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="application_entities",
        help_text="the service account this AE acts as",
    )
    may_store = models.BooleanField(default=False)
    may_query = models.BooleanField(default=False)
    may_retrieve = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "application entity"
        verbose_name_plural = "application entities"
        ordering = ["ae_title"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(port__isnull=True) | models.Q(port__gte=1, port__lte=65535),
                name="dimse_ae_port_range",
            )
        ]

    def __str__(self) -> str:
        return self.ae_title
