"""The OHIF viewer (/viewer/) opening a 300-image CT series in headless Chromium: seconds until the
first image is drawn and until every frame of the series has arrived.

Starts scripts/run.sh on SQLite in a temporary data directory, on loopback; stores ``--instances``
512x512 16-bit CT slices (``bench_wado.build_series``) through the REST upload; logs a staff member in
to the admin in Debian's Chromium (Playwright), opens the study in the viewer and prints:
  1. first image: from opening the viewer's page until a viewport canvas shows the image;
  2. all frames: until the viewer has fetched every instance's frame (it prefetches the stack),
     with how many DICOMweb requests it made and whether any failed.
Each is the median of ``--rounds`` openings in fresh browser contexts (nothing cached).

Usage: .venv/bin/python benchmarks/bench_viewer.py [--instances 300] [--rounds 3] [--port 8768]
"""

import argparse
import http.client
import re
import statistics
import sys
import time

from bench_wado import build_series
from service import HERE, running_service

sys.path.insert(0, str(HERE))
from dicomweb.tests.ohif import DRAWN

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench-viewer-password-1"


def upload(port: int, token: str, files: list[tuple[str, bytes]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _, data in files:
        conn.request(
            "POST",
            "/api/dicom/upload",
            body=data,
            headers={"Authorization": f"Token {token}", "Content-Type": "application/dicom"},
        )
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"upload: {response.status} {response.read()[:200]!r}")
        response.read()
    conn.close()


def open_once(browser, base: str, study: str, count: int) -> tuple[float, float | None, int, list[str], dict]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "bench-radiologist")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    frames: set[str] = set()
    failures: list[str] = []
    requests = [0]
    marks: dict[str, float] = {}

    def seen(response) -> None:
        if "/dicomweb/" not in response.url:
            return
        requests[0] += 1
        kind = (
            "metadata"
            if response.url.endswith("/metadata")
            else "frame"
            if "/frames/" in response.url
            else ""
        )
        if kind:
            marks.setdefault(kind, time.perf_counter() - start)
        if response.status >= 400:
            failures.append(f"{response.status} {response.url}")
        elif "/frames/" in response.url:
            frames.add(response.url.split("/frames/")[0])

    page.on("response", seen)
    start = time.perf_counter()
    page.goto(f"{base}/viewer/viewer?StudyInstanceUIDs={study}")
    page.wait_for_function(DRAWN, timeout=120_000)
    first = time.perf_counter() - start
    deadline = start + 120
    while len(frames) < count and time.perf_counter() < deadline and not failures:
        page.wait_for_timeout(50)
    every = time.perf_counter() - start if len(frames) >= count else None
    context.close()
    return first, every, requests[0], failures, marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=8768)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    files = build_series(args.instances)
    with running_service(port=args.port) as service:
        upload(args.port, service.token, files)
        study = service.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User;"
            f"User.objects.create_superuser('bench-radiologist', password={PASSWORD!r});"
            "from dicom.models import DicomFile; print(DicomFile.objects.latest('created_at').study_instance_uid)",
        )
        base = f"http://127.0.0.1:{args.port}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            results = [open_once(browser, base, study, args.instances) for _ in range(args.rounds)]
            browser.close()
    firsts = [r[0] for r in results]
    everys = [r[1] for r in results if r[1] is not None]
    failures = [f for r in results for f in r[3]]
    print(f"OHIF opening a {args.instances}-image 512x512 CT series ({args.rounds} rounds, fresh contexts):")
    print(
        f"  first image drawn: {statistics.median(firsts):.2f} s (rounds: {', '.join(f'{t:.2f}' for t in firsts)})"
    )
    if len(everys) == len(results):
        print(
            f"  every frame fetched: {statistics.median(everys):.2f} s (rounds: {', '.join(f'{t:.2f}' for t in everys)})"
        )
    else:
        print(
            f"  every frame fetched: not within 120 s in {len(results) - len(everys)} of {len(results)} rounds"
        )
    for kind in ("metadata", "frame"):
        times = [r[4][kind] for r in results if kind in r[4]]
        if times:
            print(f"  first {kind} answer received: {statistics.median(times):.2f} s")
    print(f"  DICOMweb requests per opening: {results[0][2]}; failed: {len(failures)}")
    if failures:
        print("  first failures:", failures[:3])
        sys.exit(1)


if __name__ == "__main__":
    main()
