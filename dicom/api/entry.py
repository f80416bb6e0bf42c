"""What every DRF entry point of the service shares (the REST API, DICOMweb): who acts, and the
audit of a request that authentication, permissions or throttling refused before its view ran."""

from __future__ import annotations

import uuid

from audit.services import Actor, refused
from dicom.api.errors import describe
from dicom.responses import client_address


class AuditedEntryPoint:
    """A mixin for DRF views: ``actor()`` and the refusals of ``initial()`` audited once.

    Subclasses say which audit action a request is (``refused_action``), and the file it named
    when there is one (``refused_file_id``).
    """

    def refused_action(self, request) -> str | None:
        raise NotImplementedError

    def refused_file_id(self, kwargs: dict) -> uuid.UUID | None:
        return None

    def actor(self) -> Actor:
        """The request's user (or the deactivated user whose token was refused) and address."""
        if not hasattr(self, "_actor"):
            user = self.request.user
            if not user.is_authenticated:
                user = getattr(self.request._request, "refused_user", None) or user
            self._actor = Actor(user=user, client_address=client_address(self.request))
        return self._actor

    def initial(self, request, *args, **kwargs):
        """Authentication, permissions and throttling; a request they refuse is audited here."""
        try:
            super().initial(request, *args, **kwargs)
        except Exception as error:
            action = self.refused_action(request)
            if action is not None:
                refused(
                    actor=self.actor(),
                    action=action,
                    error=error,
                    file_id=self.refused_file_id(kwargs),
                    describe=describe,
                )
            raise
