"""Settings for the DICOM service, read once from environment variables.

Two shapes: the embedded default (SQLite and local files under ``DICOM_DATA_DIR``, secrets created
there on first start, nothing to configure) and production (``DJANGO_PRODUCTION=true``), which refuses
to start without a real secret key, allowed hosts and a de-identification key.
Every variable is documented in ``.env.example`` and the README.
"""

import logging
import os
import secrets
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

from dicomsite.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

# Production refuses to start without real secrets and hosts; the embedded default makes its own.
PRODUCTION = env_bool("DJANGO_PRODUCTION", False)
# Debug pages show settings and tracebacks: never on by default, never in production.
DEBUG = env_bool("DJANGO_DEBUG", False) and not PRODUCTION
DATA_DIR = Path(env_str("DICOM_DATA_DIR", str(BASE_DIR / "data"))).resolve()
# Durability: an upload is acknowledged only once its bytes, its directory entry and its row are on
# disk (fsync of the file and its directory; SQLite synchronous=FULL; PostgreSQL synchronous_commit
# on for the service's sessions). Off, a power loss can lose acknowledged files (see the README).
DICOM_FSYNC = env_bool("DICOM_FSYNC", True)


def _embedded_secret(name: str) -> str:
    """A random secret created once under DATA_DIR (mode 0600) and read back on every start."""
    path = DATA_DIR / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{name}-")
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(temporary, path)  # the first process to link wins; others read its secret
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


SECRET_KEY = env_str("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

if PRODUCTION:
    if len(SECRET_KEY) < 32:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to 32+ random characters in production")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must name the hosts this service answers for")
elif not SECRET_KEY:
    SECRET_KEY = _embedded_secret("secret.key")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_tasks",
    # "dicom" comes before "django_tasks_db" so that its db_worker (with heartbeats and the reaper
    # of abandoned jobs) is the one `manage.py db_worker` runs.
    "audit",
    "dicom",
    "dicomweb",
    "dimse",
    "django_tasks_db",
]

MIDDLEWARE = [
    "audit.context.RequestIdMiddleware",
    # /healthz and /readyz answer here: before the host check and any HTTPS redirect (probes).
    "dicom.health.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # DICOMweb for viewers on other origins (DICOMWEB_CORS_ORIGINS); answers preflights itself.
    "corsheaders.middleware.CorsMiddleware",
    # WhiteNoise, also serving the OHIF viewer's installed files under /viewer/.
    "dicomweb.viewer.ViewerFiles",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # One line per request (JSON in production), after authentication so it knows the user.
    "dicomsite.logs.RequestLogMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "dicomsite.urls"
WSGI_APPLICATION = "dicomsite.wsgi.application"
# The API answers with and without a trailing slash itself; no redirects.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database_from_url(url: str) -> dict:
    """Turn ``postgres://user:pass@host:port/name`` or ``sqlite:///path`` into a DATABASES entry."""
    parsed = urlparse(url)
    conn_max_age = env_int("DJANGO_CONN_MAX_AGE", 600, minimum=0)
    if parsed.scheme == "sqlite":
        path = unquote(parsed.path[1:] if parsed.path.startswith("//") else parsed.path) or str(
            DATA_DIR / "db.sqlite3"
        )
        return _sqlite(path)
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": unquote(parsed.hostname or ""),
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": conn_max_age,
            "CONN_HEALTH_CHECKS": True,
            # A server that accepts and never answers must not hold a request (or /readyz's
            # check) for ever: libpq gives up connecting after this many seconds. With DICOM_FSYNC
            # a commit returns once its WAL is flushed, whatever the server's default says.
            "OPTIONS": {"connect_timeout": 5}
            | ({"options": "-c synchronous_commit=on"} if DICOM_FSYNC else {}),
        }
    raise ImproperlyConfigured(f"DATABASE_URL scheme {parsed.scheme!r} is not supported (sqlite, postgres)")


def _sqlite(path: str) -> dict:
    # The database holds patient data of originals: its directory is created private (0700).
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Several uploading clients and a worker write at once: WAL lets readers go on while one writes,
    # IMMEDIATE takes the write lock at BEGIN (a read-then-write transaction cannot upgrade its lock
    # later, and the busy timeout does not help then), and the timeout makes writers queue.
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # Kept open for the thread's life unless DJANGO_CONN_MAX_AGE says otherwise.
        "CONN_MAX_AGE": None
        if "DJANGO_CONN_MAX_AGE" not in os.environ
        else env_int("DJANGO_CONN_MAX_AGE", 0, minimum=0),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            # In WAL mode, FULL syncs the log at each commit; NORMAL may lose the last commits.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous="
            + ("FULL" if DICOM_FSYNC else "NORMAL")
            + "; PRAGMA busy_timeout=30000;",
        },
    }


DATABASES = {"default": _database_from_url(env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Storage: local files under DICOM_DATA_DIR by default, any S3-compatible store when DICOM_STORAGE=s3.
DICOM_STORAGE = env_str("DICOM_STORAGE", "local")
if DICOM_STORAGE == "local":
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DATA_DIR / "files"), "file_permissions_mode": 0o600},
    }
elif DICOM_STORAGE == "s3":
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("DICOM_S3_BUCKET"),
            "endpoint_url": env_str("DICOM_S3_ENDPOINT_URL") or None,
            "region_name": env_str("DICOM_S3_REGION") or None,
            "access_key": env_str("DICOM_S3_ACCESS_KEY_ID") or None,
            "secret_key": env_str("DICOM_S3_SECRET_ACCESS_KEY") or None,
            "location": env_str("DICOM_S3_PREFIX", ""),
            "default_acl": None,
            # Keys are made by the service from UUIDs; a retried job rewrites its own key.
            "file_overwrite": True,
            "querystring_auth": True,
        },
    }
    if not _default_storage["OPTIONS"]["bucket_name"]:
        raise ImproperlyConfigured("DICOM_STORAGE=s3 needs DICOM_S3_BUCKET")
else:
    raise ImproperlyConfigured(f"DICOM_STORAGE must be 'local' or 's3', got {DICOM_STORAGE!r}")

STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not env_bool("DJANGO_STATIC_FINDERS", False)
        else "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}
# Serve the admin's static files straight from the apps when nobody ran collectstatic (tests).
WHITENOISE_USE_FINDERS = env_bool("DJANGO_STATIC_FINDERS", False)

# Uploads: every upload goes through the hashing handler, which streams to a temporary file and
# zeroes the preamble while receiving; nothing large is held in memory.
FILE_UPLOAD_HANDLERS = ["dicom.uploads.HashingUploadHandler"]
FILE_UPLOAD_TEMP_DIR = env_str("DICOM_UPLOAD_TEMP_DIR") or None
DICOM_MAX_UPLOAD_SIZE = env_int("DICOM_MAX_UPLOAD_SIZE", 2 * 1024**3, minimum=1)
DICOM_MAX_INFLATED_SIZE = env_int("DICOM_MAX_INFLATED_SIZE", 512 * 1024**2, minimum=1)
DICOM_MAX_SEQUENCE_DEPTH = env_int("DICOM_MAX_SEQUENCE_DEPTH", 16, minimum=1)

# De-identification: the HMAC key behind every UID, pseudonym and date shift. Keep it secret and
# stable: changing it changes every mapping. In the embedded mode a key is created once under
# DICOM_DATA_DIR (deid.key); production refuses to start without DICOM_DEID_KEY.
DICOM_DEID_KEY = env_str("DICOM_DEID_KEY")
if PRODUCTION and len(DICOM_DEID_KEY) < 32:
    raise ImproperlyConfigured("DICOM_DEID_KEY must be set to 32+ random characters in production")
if not DICOM_DEID_KEY:
    DICOM_DEID_KEY = _embedded_secret("deid.key")
DICOM_DEID_DEFAULT_OPTIONS = env_list("DICOM_DEID_DEFAULT_OPTIONS", [])
DICOM_TOKEN_CACHE_SECONDS = env_int("DICOM_TOKEN_CACHE_SECONDS", 30, minimum=0)
DICOM_SYSTEM_USERNAME = env_str("DICOM_SYSTEM_USERNAME", "dicom-system")
DICOM_JOB_MAX_ATTEMPTS = env_int("DICOM_JOB_MAX_ATTEMPTS", 3, minimum=1)
# POST /api/dicom/anonymize (many files in one request): at most this many files, queued as one job
# per DICOM_ANONYMIZE_BATCH_JOB_SIZE of them.
DICOM_ANONYMIZE_BATCH_MAX = env_int("DICOM_ANONYMIZE_BATCH_MAX", 1000, minimum=1)
DICOM_ANONYMIZE_BATCH_JOB_SIZE = env_int("DICOM_ANONYMIZE_BATCH_JOB_SIZE", 25, minimum=1)
# Workers refresh a heartbeat this often; a RUNNING job whose worker has not been seen for
# DICOM_WORKER_STALE_SECONDS is taken back (its worker was killed) and tried again.
DICOM_WORKER_HEARTBEAT_SECONDS = env_int("DICOM_WORKER_HEARTBEAT_SECONDS", 5, minimum=1)
# Staged files older than this belong to a request or job that died: the worker removes them.
DICOM_STAGING_MAX_AGE_SECONDS = env_int("DICOM_STAGING_MAX_AGE_SECONDS", 3600, minimum=600)
# The web server's bounds on slow clients (dicomsite/server.py): a request's headers must arrive
# within this many seconds; its body, after the grace period, at this many bytes/s on average.
DICOM_HEADER_TIMEOUT_SECONDS = env_int("DICOM_HEADER_TIMEOUT_SECONDS", 10, minimum=1)
DICOM_BODY_GRACE_SECONDS = env_int("DICOM_BODY_GRACE_SECONDS", 10, minimum=1)
DICOM_BODY_MIN_RATE = env_int("DICOM_BODY_MIN_RATE", 16 * 1024, minimum=1)
# Threads per web worker that run requests (each keeps its database connection).
DICOM_WEB_THREADS = env_int("DICOM_WEB_THREADS", 8, minimum=1)
# Downloads through a front end (nginx): answered with X-Accel-Redirect: <prefix><key>, no body.
DICOM_DOWNLOAD_ACCEL_PREFIX = env_str("DICOM_DOWNLOAD_ACCEL_PREFIX")
# How long a worker waits between looks at an empty queue (a queued job waits at most this).
# The absolute URL clients reach /dicomweb at (e.g. https://pacs.example.org/dicomweb), written into
# DICOMweb responses (Retrieve URLs, BulkDataURIs); empty: from the request and its Forwarded headers.
DICOMWEB_PUBLIC_URL = env_str("DICOMWEB_PUBLIC_URL")
# Origins (scheme://host[:port]) whose pages may call /dicomweb/ with a token (a viewer elsewhere);
# "*" for any. Credentials are the Authorization header: no cookies are sent cross-origin.
DICOMWEB_CORS_ORIGINS = env_list("DICOMWEB_CORS_ORIGINS", [])
CORS_URLS_REGEX = r"^/dicomweb/.*$"
CORS_ALLOW_ALL_ORIGINS = DICOMWEB_CORS_ORIGINS == ["*"]
CORS_ALLOWED_ORIGINS = [] if CORS_ALLOW_ALL_ORIGINS else DICOMWEB_CORS_ORIGINS
CORS_ALLOW_METHODS = ("GET", "HEAD", "POST", "OPTIONS")
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type", "x-requested-with")
CORS_EXPOSE_HEADERS = ("Content-Type", "Content-Length", "Content-Location", "Warning", "Location")
CORS_PREFLIGHT_MAX_AGE = 600
# The OHIF viewer's installed files (scripts/install_viewer.py), served under /viewer/.
DICOM_VIEWER_DIR = Path(env_str("DICOM_VIEWER_DIR", str(BASE_DIR / "viewer" / "ohif"))).resolve()
# STOW-RS: at most this many parts per request, each part's headers at most this many bytes.
DICOMWEB_MAX_PARTS = env_int("DICOMWEB_MAX_PARTS", 10000, minimum=1)
DICOMWEB_MAX_PART_HEADER_SIZE = env_int("DICOMWEB_MAX_PART_HEADER_SIZE", 16 * 1024, minimum=256)
# The DIMSE node (`manage.py dicom_scp`): where it listens, its AE titles (the first stores
# originals, the second de-identifies with DICOM_SCP_DEID_OPTIONS), and its bounds.
DICOM_SCP_HOST = env_str("DICOM_SCP_HOST", "127.0.0.1")
DICOM_SCP_PORT = env_int("DICOM_SCP_PORT", 11112, minimum=1)
DICOM_SCP_AE_TITLE = env_str("DICOM_SCP_AE_TITLE", "DICOMSVC")
DICOM_SCP_DEID_AE_TITLE = env_str("DICOM_SCP_DEID_AE_TITLE", "DEID")
DICOM_SCP_DEID_OPTIONS = env_list("DICOM_SCP_DEID_OPTIONS", DICOM_DEID_DEFAULT_OPTIONS)
DICOM_SCP_MAX_ASSOCIATIONS = env_int("DICOM_SCP_MAX_ASSOCIATIONS", 10, minimum=1)
DICOM_SCP_MAX_PDU = env_int("DICOM_SCP_MAX_PDU", 65536, minimum=4096)
# A connection must send its A-ASSOCIATE-RQ within the ACSE timeout; an association ends when its
# peer sends nothing for the network timeout (seconds).
DICOM_SCP_ACSE_TIMEOUT = env_int("DICOM_SCP_ACSE_TIMEOUT", 10, minimum=1)
DICOM_SCP_NETWORK_TIMEOUT = env_int("DICOM_SCP_NETWORK_TIMEOUT", 60, minimum=1)
# C-FIND: at most this many matches per request (the rest are not sent; the final status says so).
DICOM_SCP_MAX_FIND_RESULTS = env_int("DICOM_SCP_MAX_FIND_RESULTS", 1000, minimum=1)
if DICOM_SCP_MAX_PDU > 16 * 1024**2:
    raise ImproperlyConfigured(f"DICOM_SCP_MAX_PDU must be at most {16 * 1024**2}, got {DICOM_SCP_MAX_PDU}")
if DICOM_SCP_PORT > 65535:
    raise ImproperlyConfigured(f"DICOM_SCP_PORT must be at most 65535, got {DICOM_SCP_PORT}")
# Embedded mode only: any calling AE title from a loopback address is accepted, acting as
# DICOM_SYSTEM_USERNAME (a local storescu needs no registration). Never in production.
DICOM_SCP_TRUST_LOOPBACK = env_bool("DICOM_SCP_TRUST_LOOPBACK", True) and not PRODUCTION
# Forwarding (dimse.forwarding): the calling AE title of our C-STORE SCU, and the bounds of a send:
# seconds to connect, for the association's negotiation and release (ACSE), and for each DIMSE
# message and network read; a STOW-RS request's connect and read timeout.
DICOM_SCU_AE_TITLE = env_str("DICOM_SCU_AE_TITLE") or DICOM_SCP_AE_TITLE
DICOM_SCU_CONNECT_TIMEOUT_SECONDS = env_int("DICOM_SCU_CONNECT_TIMEOUT_SECONDS", 10, minimum=1)
DICOM_SCU_ACSE_TIMEOUT_SECONDS = env_int("DICOM_SCU_ACSE_TIMEOUT_SECONDS", 30, minimum=1)
DICOM_SCU_DIMSE_TIMEOUT_SECONDS = env_int("DICOM_SCU_DIMSE_TIMEOUT_SECONDS", 60, minimum=1)
DICOM_STOW_TIMEOUT_SECONDS = env_int("DICOM_STOW_TIMEOUT_SECONDS", 60, minimum=1)
DICOM_WORKER_POLL_MS = env_int("DICOM_WORKER_POLL_MS", 100, minimum=10)
DICOM_WORKER_STALE_SECONDS = env_int("DICOM_WORKER_STALE_SECONDS", 30, minimum=2)
# A job that raised is tried again after this many seconds times its attempt number.
DICOM_JOB_RETRY_DELAY_SECONDS = env_int("DICOM_JOB_RETRY_DELAY_SECONDS", 10, minimum=0)
# Tests only: every job and bulk item sleeps this long first, so a test can kill a worker mid-job.
DICOM_TEST_JOB_DELAY_MS = env_int("DICOM_TEST_JOB_DELAY_MS", 0, minimum=0)

TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default"],
    }
}

REST_FRAMEWORK = {
    # Token first, so that a request without credentials answers 401 (with WWW-Authenticate), not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "dicom.api.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "dicom.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI schema (/api/schema/) and Swagger UI (/api/docs/): public, as the API's contract holds
# no patient data; Swagger UI is served from our static files (sidecar) and reaches nothing outside.
SPECTACULAR_SETTINGS = {
    "TITLE": "DICOM service API",
    "DESCRIPTION": "Upload, de-identify (DICOM PS3.15 Annex E), inspect and download DICOM files. "
    'Every error answers {"detail": "..."}.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "PREPROCESSING_HOOKS": ["dicom.api.schema.seed_paths_only"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "dicom.api.schema.closed_objects_and_links",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No "validatorUrl": Swagger UI would otherwise send the schema to an outside validator.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "audit.context.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        # Production: one JSON object per line (timestamp, level, logger, message, request_id, fields).
        "json": {"()": "dicomsite.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if PRODUCTION else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # One line per request (dicomsite.logs, dicomsite.server), whatever DJANGO_LOG_LEVEL says.
        "dicomsite.requests": {"level": "INFO"},
    },
}

if PRODUCTION:
    # Python warnings (a library's deprecation, a missing static directory) become log records
    # too, so that every line the service writes to stderr in production is JSON.
    logging.captureWarnings(True)
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Served over HTTPS only (TLS ends at the load balancer, which sends X-Forwarded-Proto): plain
    # HTTP is redirected, and browsers are told to come back over HTTPS (HSTS). The probes
    # (/healthz, /readyz) answer before the redirect. `check --deploy` passes with these defaults.
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 365 * 24 * 3600, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
