"""The one adapter to the OCR engine: RapidOCR (``rapidocr-onnxruntime``) on ONNX Runtime.

Everything that knows RapidOCR's calling convention, its result layout and its configuration keys is
here; :mod:`dicom.services.pixel_text` sees only :class:`OcrLine`. The detection (PP-OCRv4 DB) and
recognition (PP-OCRv4 CRNN) models ship inside the wheel: nothing is downloaded, ever. The engine is
built on first use in each process (0.7 to 1 s with the files cached, a few seconds cold; about 130 MB) and shared by its threads behind a lock,
since one RapidOCR object keeps per-call state.

The text an engine reads is patient data: it is returned to the caller and never logged.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_engine = None

# Settings of RapidOCR 1.4 (keyword names of its constructor). The angle classifier is off: it only
# flips lines upside down, and burned-in annotation is drawn upright. The detector scales an image's
# shorter side up to det_limit_side_len: 480 instead of RapidOCR's 736 halves the cost of a small
# frame (a 128 x 128 CT: 70 instead of 120 ms) with the same recall and precision on the test set
# (benchmarks/bench_pixel_text.py); frames larger than that are not scaled.
# One thread per inference: the service runs several processes (web workers, db_workers), one OCR
# call at a time each; ONNX Runtime's default pool of a thread per core, spinning while it waits,
# took 188 ms of CPU (125 ms wall) per 128 x 128 frame here against 82 (82) on one thread.
_PARAMS = {
    "use_cls": False,
    "print_verbose": False,
    "text_score": 0.5,
    "det_limit_side_len": 480,
    "intra_op_num_threads": 1,
    "inter_op_num_threads": 1,
}


@dataclass(frozen=True)
class OcrLine:
    """One line of text the engine read: its axis-aligned box in image pixels, the text, a score."""

    left: int
    top: int
    width: int
    height: int
    text: str
    score: float


class OcrUnavailableError(RuntimeError):
    """The OCR engine is not installed or its models cannot be loaded."""


def _get_engine():
    global _engine
    if _engine is None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:  # pragma: no cover - a broken installation
            raise OcrUnavailableError("the OCR engine (rapidocr-onnxruntime) is not installed") from exc
        _engine = RapidOCR(**_PARAMS)
    return _engine


def read_lines(image: np.ndarray) -> list[OcrLine]:
    """Detect and read every line of text in ``image`` (``H x W`` or ``H x W x 3``, uint8).

    Returns the lines whose recognition score reaches the engine's threshold, boxes clipped to the
    image. Thread-safe (one call at a time per process). Raises OcrUnavailableError when the engine
    cannot be loaded.
    """
    height, width = image.shape[:2]
    with _lock:
        engine = _get_engine()
        result, _elapsed = engine(np.ascontiguousarray(image), use_cls=False)
    lines = []
    for points, text, score in result or ():
        xs = [point[0] for point in points]
        ys = [point[1] for point in points]
        left = max(0, int(np.floor(min(xs))))
        top = max(0, int(np.floor(min(ys))))
        right = min(width, int(np.ceil(max(xs))))
        bottom = min(height, int(np.ceil(max(ys))))
        if right > left and bottom > top:
            lines.append(OcrLine(left, top, right - left, bottom - top, str(text), float(score)))
    return lines
