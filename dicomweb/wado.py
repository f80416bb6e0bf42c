"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data and rendered images.

Every resource finds its instances through ``dicomweb.selectors`` (what the API shows the user, the
newest file per SOP Instance UID; missing and forbidden are the same 404), refuses an original's
content to staff without the patient-data permission (403, as the REST download does; its metadata
too: an original's header is its patient data), negotiates the Accept header (``dicomweb.media``;
406 when nothing acceptable can be produced) and names in the audit row what it answers with.

Decisions where the standard leaves a choice:

- Instances are sent in the syntax they are stored in unless the client asks another with
  ``transfer-syntax=``: Explicit VR Little Endian (1.2.840.10008.1.2.1) is produced from any
  stored syntax the installed decoders read; any other is only the stored one (406 otherwise).
- Frames and bulk data: ``type="application/octet-stream"`` without a transfer syntax (or with
  Explicit VR Little Endian) is decoded native little-endian bytes, as the standard's default;
  ``transfer-syntax=*``, a ``type`` naming the codec (``image/jp2``...) or ``*/*`` is the stored
  codec stream (what viewers ask for: no server-side decoding).
- A series or study asked in Explicit VR Little Endian is transcoded instance by instance as the
  body is sent (one decoded instance in memory); the first is transcoded before the answer starts
  (so one undecodable instance is a 406), a later one that fails to decode ends the body before
  its closing boundary, which the client sees as an incomplete message.
- Rendered and thumbnail of a series is its middle instance by Instance Number (first frame); of a
  study, that of its first series by Series Number. Several frames in one rendered request are
  refused (400): one image per request.
"""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from urllib.parse import quote

from django.http import HttpResponse, StreamingHttpResponse
from pydicom import dcmread

from dicom import access
from dicom.models import DicomFile
from dicom.services import storage
from dicom.services.dicomjson import find_element, instance_json, parse_bulk_data_path
from dicom.services.errors import AccessRefusedError, DicomServiceError, FileNotFoundInServiceError
from dicom.services.rendering import Window, read_image_header, render_image
from dicomweb import pixels, selectors
from dicomweb.base import service_root
from dicomweb.media import (
    MULTIPART,
    Match,
    Offer,
    Part,
    multipart,
    multipart_content_type,
    negotiate,
    new_boundary,
    not_acceptable,
)

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = pixels.OCTET_STREAM
THUMBNAIL_SIZE = 128
INSTANCE_OFFERS = (Offer(MULTIPART, DICOM),)
METADATA_OFFERS = (Offer(DICOM_JSON), Offer("application/json"))
RENDERED_OFFERS = (Offer("image/jpeg"), Offer("image/png"))


def _accept(request) -> str | None:
    return request.META.get("HTTP_ACCEPT")


def _require_patient_data(user, files: Iterable[DicomFile]) -> None:
    if not all(access.may_see_patient_data(user, dicom_file) for dicom_file in files):
        raise AccessRefusedError(
            "the resource holds originals with patient data: retrieving them needs the patient data "
            "permission (dicom.view_phi)"
        )


def _touch(view, files: Iterable[DicomFile]) -> None:
    files = list(files)
    if view.op is not None:
        view.op.touch(
            studies=[f.study_instance_uid for f in files],
            series=[f.series_instance_uid for f in files],
            instances=[f.sop_instance_uid for f in files],
        )


def _instance_url(root: str, dicom_file: DicomFile) -> str:
    # UIDs are digits and dots; quoting keeps a malformed one stored long ago from breaking the URL.
    study, series, instance = (
        quote(uid, safe="")
        for uid in (
            dicom_file.study_instance_uid,
            dicom_file.series_instance_uid,
            dicom_file.sop_instance_uid,
        )
    )
    return f"{root}/studies/{study}/series/{series}/instances/{instance}"


def _stored_syntax(dicom_file: DicomFile) -> str:
    return dicom_file.transfer_syntax_uid or pixels.EXPLICIT_VR_LITTLE_ENDIAN


# --- Retrieve instances, series, studies -------------------------------------------------------


def retrieve(view, request, *, study: str, series: str | None = None, instance: str | None = None):
    """The instances under the path as ``multipart/related; type="application/dicom"``, streamed."""
    files = selectors.instances_or_404(request.user, study=study, series=series, instance=instance)
    _require_patient_data(request.user, files)
    target = _retrieve_syntax(negotiate(_accept(request), INSTANCE_OFFERS), files)
    boundary = new_boundary()
    parts = [_instance_part(dicom_file, target) for dicom_file in files]
    if target is not None and parts:
        # The first transcoding runs now, so a single instance that cannot be decoded is a 406
        # rather than a cut-off body; later ones run as the body is sent.
        first = parts[0]
        parts[0] = Part(first.content_type, [b"".join(first.content)])
    _touch(view, files)
    response = StreamingHttpResponse(
        multipart(parts, boundary), content_type=multipart_content_type(DICOM, boundary)
    )
    if target is None and all(f.size is not None for f in files):
        response["Content-Length"] = str(_multipart_length(parts, boundary, [f.size for f in files]))
    return response


def _retrieve_syntax(matches: list[Match], files: list[DicomFile]) -> str | None:
    """The transfer syntax to transcode every instance to, or None for each as stored; 406 if none fits."""
    for match in matches:
        asked = match.transfer_syntax
        if asked in (None, "*"):
            return None
        if all(_stored_syntax(f) == asked for f in files):
            return None
        if all(pixels.can_transcode(_stored_syntax(f), asked) for f in files):
            return asked
    raise not_acceptable(
        "these instances (stored as " + ", ".join(sorted({_stored_syntax(f) for f in files})) + ")",
        INSTANCE_OFFERS,
    )


class _LazyContent:
    """A part's content, read only when the body reaches it (one instance in memory at a time)."""

    def __init__(self, dicom_file: DicomFile, target: str | None) -> None:
        self.key = dicom_file.storage_key
        self.transcode = target is not None and target != _stored_syntax(dicom_file)

    def __iter__(self) -> Iterator[bytes]:
        if not self.transcode:
            yield from pixels.blocks(storage.open_stored(self.key))
            return
        with storage.open_stored(self.key) as fp:
            yield pixels.transcoded(fp)


def _instance_part(dicom_file: DicomFile, target: str | None) -> Part:
    syntax = target or _stored_syntax(dicom_file)
    return Part(f"{DICOM}; transfer-syntax={syntax}", _LazyContent(dicom_file, target))


def _multipart_length(parts: list[Part], boundary: str, sizes: list[int]) -> int:
    framing = sum(len(b) for b in multipart([Part(p.content_type, [], p.headers) for p in parts], boundary))
    return framing + sum(sizes)


# --- Metadata -----------------------------------------------------------------------------------


class _MetadataCache:
    """Each stored file's DICOM JSON text, by file id, in this process (bounded, least recently used out).

    A stored file never changes (a new upload is a new file), so its JSON is reusable as long as
    the service root is left out: it is stored with a random token in its place, replaced per
    request. Re-opening a viewer on a series then costs string joins instead of 300 header reads.
    Only de-identified files are kept: an original's header is patient data, and patient data is
    not kept in a process's memory beyond the request that read it.
    """

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.token = f"urn:dicomweb-root:{uuid.uuid4().hex}"
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            text = self._entries.get(key)
            if text is not None:
                self._entries.move_to_end(key)
            return text

    def put(self, key: str, text: str) -> None:
        with self._lock:
            if key in self._entries or len(text) > self.max_chars:
                return
            self._entries[key] = text
            self._chars += len(text)
            while self._chars > self.max_chars:
                _, dropped = self._entries.popitem(last=False)
                self._chars -= len(dropped)


_metadata_cache = _MetadataCache(max_chars=64 * 1024 * 1024)


def _instance_metadata_text(dicom_file: DicomFile) -> str:
    key = f"{dicom_file.id}:{dicom_file.storage_key}"
    text = _metadata_cache.get(key)
    if text is None:
        with storage.open_stored(dicom_file.storage_key) as fp:
            instance = instance_json(
                fp,
                bulk_data_uri=f"{_instance_url(_metadata_cache.token, dicom_file)}/bulkdata",
                transfer_syntax_uid=dicom_file.transfer_syntax_uid,
            )
        text = json.dumps(instance, separators=(",", ":"))
        if dicom_file.anonymized:
            _metadata_cache.put(key, text)
    return text


def metadata(view, request, *, study: str, series: str | None = None, instance: str | None = None):
    """Each instance's header as DICOM JSON (``application/dicom+json``), bulk data as absolute URIs."""
    files = selectors.instances_or_404(request.user, study=study, series=series, instance=instance)
    _require_patient_data(request.user, files)
    matches = negotiate(_accept(request), METADATA_OFFERS)
    if not matches:
        raise not_acceptable("metadata", METADATA_OFFERS)
    root = service_root(request)
    token = _metadata_cache.token
    body = ",".join(_instance_metadata_text(f).replace(token, root) for f in files)
    _touch(view, files)
    data = f"[{body}]".encode()
    response = HttpResponse(content_type=matches[0].offer.media_type)
    response["Vary"] = "Accept-Encoding"
    if len(data) > 8192 and _accepts_gzip(request):
        # A series' metadata is megabytes of repetitive JSON: a tenth of it on the wire for ~5 ms/MB.
        data = gzip.compress(data, compresslevel=1)
        response["Content-Encoding"] = "gzip"
    response.content = data
    return response


def _accepts_gzip(request) -> bool:
    for coding in request.META.get("HTTP_ACCEPT_ENCODING", "").split(","):
        name, _, params = coding.partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip().lower()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


# --- Frames -------------------------------------------------------------------------------------


def _one_instance(request, *, study: str, series: str, instance: str) -> DicomFile:
    dicom_file = selectors.instances_or_404(request.user, study=study, series=series, instance=instance)[0]
    _require_patient_data(request.user, [dicom_file])
    return dicom_file


def _pixel_offers(stored_syntax: str, encapsulated: bool) -> list[Offer]:
    codec = pixels.FRAME_MEDIA_TYPES.get(stored_syntax) if encapsulated else None
    offers = [Offer(MULTIPART, codec)] if codec else []
    return [*offers, Offer(MULTIPART, OCTET_STREAM)]


def _frames_representation(matches: list[Match], frames: pixels.Frames) -> tuple[str, bool] | None:
    """(part Content-Type, whether to decode) of the first match that can be produced, or None."""
    stored, explicit = frames.transfer_syntax, pixels.EXPLICIT_VR_LITTLE_ENDIAN
    for match in matches:
        part_type, asked = match.offer.part_type, match.transfer_syntax
        if not frames.encapsulated:
            # Native frames are little-endian bytes once read (the stored bytes when they are so already).
            if asked in (None, "*", explicit, stored):
                return f"{OCTET_STREAM}; transfer-syntax={explicit}", not pixels.raw_frames_as_stored(frames)
        elif part_type != OCTET_STREAM:
            if asked in (None, "*", stored):
                return f"{part_type}; transfer-syntax={stored}", False
        elif asked in ("*", stored):
            return f"{OCTET_STREAM}; transfer-syntax={stored}", False
        elif asked in (None, explicit) and pixels.can_decode(stored):
            return f"{OCTET_STREAM}; transfer-syntax={explicit}", True
    return None


# The headers of the multi-frame instances whose frames were asked last, in this process: a viewer
# asks a cine loop or an enhanced CT one frame per request, and such a header (per-frame functional
# groups) can take longer to read than the frame. De-identified files only, as the metadata above.
_MULTIFRAME_HEADERS: OrderedDict[str, pixels.Frames] = OrderedDict()
_MULTIFRAME_HEADERS_KEPT = 32
_multiframe_lock = threading.Lock()


def _frames_header(dicom_file: DicomFile, fp) -> pixels.Frames:
    key = f"{dicom_file.id}:{dicom_file.storage_key}"
    with _multiframe_lock:
        header = _MULTIFRAME_HEADERS.get(key)
        if header is not None:
            _MULTIFRAME_HEADERS.move_to_end(key)
            return header
    header = pixels.read_frames_header(fp)
    if header.count > 1 and dicom_file.anonymized:
        with _multiframe_lock:
            _MULTIFRAME_HEADERS[key] = header
            while len(_MULTIFRAME_HEADERS) > _MULTIFRAME_HEADERS_KEPT:
                _MULTIFRAME_HEADERS.popitem(last=False)
    return header


def frames(view, request, *, study: str, series: str, instance: str, frames: str):
    """Frames ``1,2,...`` of an instance as ``multipart/related``, one part per frame, in the order asked."""
    numbers = pixels.parse_frame_list(frames)
    dicom_file = _one_instance(request, study=study, series=series, instance=instance)
    fp = storage.open_stored(dicom_file.storage_key)
    try:
        header = _frames_header(dicom_file, fp)
        pixels.check_frame_numbers(header, numbers)
        offers = _pixel_offers(header.transfer_syntax, header.encapsulated)
        chosen = _frames_representation(negotiate(_accept(request), offers), header)
        if chosen is None:
            raise not_acceptable(f"frames stored as {header.transfer_syntax}", offers)
        content_type, decode = chosen
        read = pixels.decoded_frame if decode else pixels.stored_frame
        # The first frame is read now, so a frame that cannot be read or decoded is a status code
        # rather than a cut-off body; the others are read as the body is sent.
        first = read(fp, header, numbers[0])
    finally:
        fp.close()
    _touch(view, [dicom_file])
    parts = _frame_parts(dicom_file.storage_key, header, numbers, content_type, read, first)
    return _multipart_response(parts, content_type.split(";")[0], stream=len(numbers) > 1)


def _frame_parts(
    key: str, header: pixels.Frames, numbers, content_type: str, read, first: bytes
) -> Iterator[Part]:
    """One part per frame, read one at a time from a file of its own (the view's is closed by then)."""
    yield Part(content_type, [first])
    if len(numbers) == 1:
        return
    fp = storage.open_stored(key)
    try:
        for number in numbers[1:]:
            yield Part(content_type, [read(fp, header, number)])
    finally:
        fp.close()


def _multipart_response(parts: Iterable[Part], part_type: str, *, stream: bool = False) -> HttpResponse:
    """One frame or value in memory, with its length; several streamed (a cine loop is gigabytes)."""
    boundary = new_boundary()
    content_type = multipart_content_type(part_type, boundary)
    if stream:
        return StreamingHttpResponse(multipart(parts, boundary), content_type=content_type)
    return HttpResponse(b"".join(multipart(parts, boundary)), content_type=content_type)


# --- Bulk data ----------------------------------------------------------------------------------


def bulkdata(view, request, *, study: str, series: str, instance: str, path: str):
    """The value a BulkDataURI of :func:`metadata` names, as ``multipart/related`` (one part; pixel
    data of several frames: one part per frame)."""
    where = parse_bulk_data_path(path)
    dicom_file = _one_instance(request, study=study, series=series, instance=instance)
    fp = storage.open_stored(dicom_file.storage_key)
    try:
        if not where.steps and where.tag in (0x7FE00010, 0x7FE00008, 0x7FE00009):
            response = _pixel_bulkdata(request, fp, where.tag, dicom_file.storage_key)
        else:
            response = _element_bulkdata(request, fp, where)
    finally:
        fp.close()
    _touch(view, [dicom_file])
    return response


def _pixel_bulkdata(request, fp, tag: int, key: str) -> HttpResponse:
    try:
        header = pixels.read_frames_header(fp)
    except FileNotFoundInServiceError:
        raise FileNotFoundInServiceError("no such bulk data in this instance") from None
    keyword_tags = {"PixelData": 0x7FE00010, "FloatPixelData": 0x7FE00008, "DoubleFloatPixelData": 0x7FE00009}
    if keyword_tags[header.pixels.keyword] != tag:
        raise FileNotFoundInServiceError("no such bulk data in this instance")
    offers = _pixel_offers(header.transfer_syntax, header.encapsulated)
    chosen = _frames_representation(negotiate(_accept(request), offers), header)
    if chosen is None:
        raise not_acceptable(f"pixel data stored as {header.transfer_syntax}", offers)
    content_type, decode = chosen
    part_type = content_type.split(";")[0]
    if header.encapsulated or decode:
        read = pixels.decoded_frame if decode else pixels.stored_frame
        numbers = list(range(1, header.count + 1))
        parts = _frame_parts(key, header, numbers, content_type, read, read(fp, header, 1))
        return _multipart_response(parts, part_type, stream=len(numbers) > 1)
    # Native pixel data: the whole value in one part, streamed from the file as it lies there.
    length = min(header.pixels.length or 0, header.pixels.available)
    value = pixels.blocks(storage.open_stored(key), start=header.pixels.value_offset, length=length)
    return _multipart_response([Part(content_type, value)], part_type, stream=True)


def _element_bulkdata(request, fp, where) -> HttpResponse:
    offers = [Offer(MULTIPART, OCTET_STREAM)]
    if not negotiate(_accept(request), offers):
        raise not_acceptable("bulk data", offers)
    try:
        ds, _ = read_image_header(fp)
    except DicomServiceError:
        # No image: read the header of whatever the instance is.
        fp.seek(0)
        try:
            ds = dcmread(fp, stop_before_pixels=True)
        except Exception as exc:
            raise FileNotFoundInServiceError("no such bulk data in this instance") from exc
    element = find_element(ds, where)
    value = element.value
    if not isinstance(value, bytes | bytearray):
        raise FileNotFoundInServiceError(
            "no such bulk data in this instance (the element holds no binary value)"
        )
    return _multipart_response([Part(OCTET_STREAM, [bytes(value)])], OCTET_STREAM)


# --- Rendered and thumbnails -------------------------------------------------------------------


def _representative(files: list[DicomFile]) -> DicomFile:
    """The first series with images (by Series Number), and in it the middle image by Instance Number."""

    def number(dicom_file: DicomFile, key: str) -> int:
        value = (dicom_file.metadata or {}).get(key)
        try:
            return int(value)
        except (TypeError, ValueError):
            return 2**31

    # Files whose header named no image size (reports, plans) are chosen only if nothing else is there.
    images = [f for f in files if (f.metadata or {}).get("rows")] or files
    first = min(images, key=lambda f: (number(f, "series_number"), f.series_instance_uid))
    series = sorted(
        (f for f in images if f.series_instance_uid == first.series_instance_uid),
        key=lambda f: (number(f, "instance_number"), f.sop_instance_uid),
    )
    return series[(len(series) - 1) // 2]


def _numbers(text: str, name: str, count: tuple[int, ...]) -> list[float]:
    try:
        values = [float(piece) for piece in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count or not all(v == v and abs(v) < 1e9 for v in values):
        raise DicomServiceError(
            f"{name} must be {' or '.join(str(c) for c in count)} comma-separated numbers"
        )
    return values


def _render_options(request, *, thumbnail: bool) -> dict:
    query = request.query_params
    options: dict = {"fit": (THUMBNAIL_SIZE, THUMBNAIL_SIZE) if thumbnail else None, "quality": 90}
    if "quality" in query:
        quality = query["quality"].strip()
        if not quality.isdigit() or not 1 <= int(quality) <= 100:
            raise DicomServiceError("quality must be a whole number from 1 to 100")
        options["quality"] = int(quality)
    if "viewport" in query:
        values = _numbers(query["viewport"], "viewport", (2,))
        width, height = (int(v) for v in values)
        if width < 1 or height < 1 or width > 16384 or height > 16384:
            raise DicomServiceError("viewport width and height must be 1 to 16384 pixels")
        options["fit"] = (width, height)
    if "window" in query:
        pieces = query["window"].split(",")
        function = pieces[2].strip().upper() if len(pieces) == 3 else "LINEAR"
        center, width = _numbers(",".join(pieces[:2]), "window", (2,))
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID") or width < 1:
            raise DicomServiceError(
                "window must be center,width[,function] with width >= 1 and function "
                "linear, linear-exact or sigmoid"
            )
        options["window"] = Window(center=center, width=width, function=function)
    return options


def rendered(
    view,
    request,
    *,
    study: str,
    series: str | None = None,
    instance: str | None = None,
    frames: str | None = None,
    thumbnail: bool = False,
):
    """An instance's frame (the first, or the one frame asked) as JPEG (default) or PNG."""
    number = 1
    if frames is not None:
        numbers = pixels.parse_frame_list(frames)
        if len(numbers) != 1:
            raise DicomServiceError("rendered frames are served one frame per request")
        number = numbers[0]
    options = _render_options(request, thumbnail=thumbnail)
    matches = negotiate(_accept(request), RENDERED_OFFERS)
    if not matches:
        raise not_acceptable("a rendered image", RENDERED_OFFERS)
    media_type = matches[0].offer.media_type
    files = selectors.instances_or_404(request.user, study=study, series=series, instance=instance)
    dicom_file = files[0] if instance is not None else _representative(files)
    _require_patient_data(request.user, [dicom_file])
    with storage.open_stored(dicom_file.storage_key) as fp:
        image = render_image(fp, frame=number - 1, image_format=media_type.split("/")[1], **options)
    _touch(view, [dicom_file])
    return HttpResponse(image, content_type=media_type)
