"""Install the OHIF viewer (v3, the npm package @ohif/app's built dist/) to be served under /viewer/.

Run at build time (``make run`` / ``make test`` / the Dockerfile), never at run time:

    python scripts/install_viewer.py viewer/ohif

``npm pack`` fetches the package's tarball (no dependencies: dist/ is complete), its SHA-512 is
checked against the one pinned here, and dist/ is unpacked without the parts the service does not
offer (``ort/``, the ONNX runtime of the AI segmentation tools, 136 MB; the microscopy viewer).
The build expects to live at the site root; the paths it hard-codes (the HTML's links, webpack's
public path, the stylesheet's fonts) are rewritten to ``/viewer/``. Its ``app-config.js`` is not
used: the service answers that path with its own configuration (``dicomweb.viewer``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
PREFIX = "/viewer/"
LEFT_OUT = ("ort/", "dicom-microscopy-viewer/", "app-config.js", "_headers", "_redirects", "serve.json")
MARKER = ".installed"


def _check(tarball: Path) -> None:
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if f"sha512-{digest}" != INTEGRITY:
        sys.exit(f"{tarball.name}: its SHA-512 is not the one pinned for {PACKAGE}@{VERSION}")


def _unpack(tarball: Path, dest: Path) -> None:
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix("package/dist/")
            if name == member.name or not member.isfile() or name.startswith(LEFT_OUT):
                continue
            target = dest / name
            if not target.resolve().is_relative_to(dest.resolve()):
                sys.exit(f"{tarball.name}: {member.name} points outside dist/")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)


def _rewrite(path: Path, replacements: list[tuple[re.Pattern, str]]) -> None:
    text = path.read_text(encoding="utf-8")
    for pattern, replacement in replacements:
        text = pattern.sub(replacement, text)
    path.write_text(text, encoding="utf-8")


def _relocate(dest: Path) -> None:
    _rewrite(
        dest / "index.html",
        [
            (re.compile(r'window\.PUBLIC_URL="/"'), f'window.PUBLIC_URL="{PREFIX}"'),
            (re.compile(r'(href|src)="/(?!/)'), rf'\1="{PREFIX}'),
        ],
    )
    public_path = re.compile(r'__webpack_require__\.p = "/";')
    for script in dest.glob("*.js"):
        if b'__webpack_require__.p = "/";' in script.read_bytes():
            _rewrite(script, [(public_path, f'__webpack_require__.p = "{PREFIX}";')])
    for sheet in dest.glob("*.css"):
        _rewrite(sheet, [(re.compile(r"url\(/(?!/)"), f"url({PREFIX}")])


def main() -> None:
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "viewer/ohif")
    marker = dest / MARKER
    if marker.exists() and marker.read_text().strip() == INTEGRITY:
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", "--silent", f"{PACKAGE}@{VERSION}"],
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tarball = next(Path(tmp).glob("*.tgz"))
        _check(tarball)
        staged = Path(tmp) / "dist"
        _unpack(tarball, staged)
        _relocate(staged)
        (staged / MARKER).write_text(INTEGRITY + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, dest)
    print(f"installed {PACKAGE}@{VERSION} in {dest}")


if __name__ == "__main__":
    main()
