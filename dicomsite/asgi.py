"""The ASGI application the web server runs: Django's, with the bounds of ``dicomsite.server``."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dicomsite.settings")
django.setup(set_prefix=False)

from dicomsite.server import BoundedASGIHandler  # noqa: E402  (after Django is set up)

application = BoundedASGIHandler()
