"""The forwarding API: ``POST /api/dimse/send`` (a manual send) and ``GET /api/dimse/transfers/{id}``.

Thin views in the REST API's manner (``dicom.api``): the same authentication, the same error shape
(``{"detail": "..."}``), every request audited once; the decisions are ``dimse.forwarding``'s.
"""

from __future__ import annotations

from django.urls import re_path
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.models import AuditLog
from audit.services import operation
from dicom.api.entry import AuditedEntryPoint
from dicom.api.errors import describe
from dicom.api.serializers import StrictFieldsSerializer
from dicom.api.views import BoundedJSONParser
from dicom.services.errors import DicomServiceError
from dimse import forwarding
from dimse.models import Transfer


class TransferNotFoundError(DicomServiceError):
    status_code = 404


class SendSerializer(StrictFieldsSerializer):
    """``{"destination": "<name or id>", "files": ["<file id>", ...]}``."""

    destination = serializers.CharField(max_length=64)
    # Ids as text: one that is not a UUID is a file not found (404), as in the paths of /api/dicom/.
    files = serializers.ListField(
        child=serializers.CharField(max_length=64),
        min_length=1,
        max_length=forwarding.MAX_FILES_PER_REQUEST,
    )


def transfer_body(transfer: Transfer) -> dict:
    return {
        "transfer_id": transfer.pk,
        "file_id": str(transfer.file_id),
        "destination": transfer.destination.name,
        "status": transfer.status,
        "detail": transfer.detail,
        "attempts": transfer.attempts,
        "job_id": str(transfer.job_id) if transfer.job_id else None,
    }


class SendView(AuditedEntryPoint, APIView):
    """Queue the send of files the user may see to a destination: 202 with one transfer per file."""

    parser_classes = [BoundedJSONParser]

    def refused_action(self, request) -> str | None:
        return None if request.method == "OPTIONS" else AuditLog.Action.EXPORT

    def post(self, request: Request) -> Response:
        with operation(actor=self.actor(), action=AuditLog.Action.EXPORT, describe=describe):
            serializer = SendSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
            transfers = forwarding.request_send(
                actor=self.actor(),
                request=forwarding.SendRequest(file_ids=data["files"], destination=data["destination"]),
            )
        return Response(
            {
                "message": "queued for sending",
                "destination": transfers[0].destination.name,
                "transfers": [transfer_body(transfer) for transfer in transfers],
            },
            status=202,
        )


class TransferView(AuditedEntryPoint, APIView):
    """A transfer's status: its requester's, or any for staff (the transfer names no patient data)."""

    def refused_action(self, request) -> str | None:
        return None

    def get(self, request: Request, transfer_id: str) -> Response:
        transfers = Transfer.objects.select_related("destination")
        if not request.user.is_staff:
            transfers = transfers.filter(requested_by=request.user)
        transfer = (
            transfers.filter(pk=int(transfer_id)).first()
            if transfer_id.isdigit() and len(transfer_id) < 19
            else None
        )
        if transfer is None:
            raise TransferNotFoundError("transfer not found")
        return Response(transfer_body(transfer))


urlpatterns = [
    re_path(r"^send/?$", SendView.as_view(), name="dimse-send"),
    re_path(r"^transfers/(?P<transfer_id>[^/]+)/?$", TransferView.as_view(), name="dimse-transfer"),
]
