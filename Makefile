# The targets people type. `make run` and `make test` do all the set-up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# A free loopback port for the throwaway PostgreSQL of `make test`, picked once per make run.
ifndef PGPORT
PGPORT := $(shell $(PYTHON) -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endif
PGDIR ?= /tmp/dicom-pgtest-$(PGPORT)
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_PACKAGES := postgresql dcmtk dicom3tools chromium chromium-driver docker-compose orthanc orthanc-dicomweb

VIEWER := viewer/ohif/.installed
# The end of the *-deps recipes: install the Debian packages their checks put in $$missing, if any.
# Debian starts an installed Orthanc as a service on every interface: it is stopped and disabled.
INSTALL_MISSING = if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  case "$$missing" in *orthanc*) $(SUDO) systemctl disable --now orthanc >/dev/null 2>&1 || true;; esac; \
	fi

.PHONY: run test test-fast lint format migrate superuser system-deps viewer-deps bench-deps bench bench-orthanc fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# requirements-ocr.txt goes in without its declared dependencies (see that file).
$(VENV)/.runtime: requirements.txt requirements-ocr.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-ocr.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-ocr.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -r requirements-ocr.txt
	touch $@ $(VENV)/.runtime

# Debian packages the suite needs: PostgreSQL (tests run on it), DCMTK (dcmdump checks our output
# outside pydicom), dicom3tools (dciodvfy, DICOM's object validator, checks that de-identified output
# stays valid), Chromium (browser tests of the admin and the viewer), docker-compose (validates
# docker-compose.yml; no daemon needed) and Orthanc with its DICOMweb plugin (a DICOMweb client of the
# service in the interoperability tests). Debian starts an installed Orthanc as a service listening on
# every interface: it is stopped and disabled at once (the tests start their own, isolated). Installed only when missing.
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v dcmdump >/dev/null 2>&1 || missing="$$missing dcmtk"; \
	command -v dciodvfy >/dev/null 2>&1 || missing="$$missing dicom3tools"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	[ -x /usr/sbin/Orthanc ] || missing="$$missing orthanc"; \
	[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb"; \
	$(INSTALL_MISSING)

# npm fetches the OHIF viewer (served under /viewer/) at build time.
viewer-deps:
	@missing=""; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	$(INSTALL_MISSING)

$(VIEWER): scripts/install_viewer.py | $(BIN)/python
	$(MAKE) --no-print-directory viewer-deps
	$(BIN)/python scripts/install_viewer.py viewer/ohif

migrate: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput

# Web server (gunicorn) and worker (db_worker) in the foreground on SQLite and local files; Ctrl-C stops both.
run: $(VENV)/.runtime $(VIEWER)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v 0
	PORT=$(PORT) BIN=$(BIN) scripts/run.sh

superuser: $(VENV)/.runtime
	$(BIN)/python manage.py createsuperuser

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_STATIC_FINDERS=1 $(BIN)/python manage.py makemigrations --check --dry-run

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The whole suite on a throwaway PostgreSQL on loopback, started and stopped here.
test: system-deps $(VENV)/.dev $(VIEWER)
	$(MAKE) --no-print-directory lint
	scripts/pg_test.sh start $(PGDIR) $(PGPORT)
	status=0; \
	DATABASE_URL=postgres://postgres@127.0.0.1:$(PGPORT)/dicom DJANGO_STATIC_FINDERS=1 \
	  DICOM_DATA_DIR=$(PGDIR)-data $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	scripts/pg_test.sh stop $(PGDIR); rm -rf $(PGDIR)-data; \
	exit $$status

# The inner loop: everything but the tests marked slow (processes, browsers), on SQLite.
test-fast: $(VENV)/.dev $(VIEWER)
	DJANGO_STATIC_FINDERS=1 $(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

# Debian packages the benchmarks need: Orthanc (the peer benchmarks/compare_orthanc.py measures
# against) and PostgreSQL (its PostgreSQL runs, and bench_audit --postgres). Installed only when missing;
# Orthanc's own service is stopped and disabled (the benchmark starts its own, isolated).
bench-deps:
	@missing=""; \
	[ -x /usr/sbin/Orthanc ] || missing="$$missing orthanc"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	$(INSTALL_MISSING)

# Every benchmark, then the comparison with Orthanc (about 8 minutes on 2 cores; COMPARE_ARGS=--quick: 1).
bench: bench-deps $(VENV)/.dev $(VIEWER)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done
	$(BIN)/python benchmarks/compare_orthanc.py $(COMPARE_ARGS)

# The comparison with Orthanc alone.
bench-orthanc: bench-deps $(VENV)/.dev
	$(BIN)/python benchmarks/compare_orthanc.py $(COMPARE_ARGS)

# The long schemathesis run against a throwaway service (FUZZ_EXAMPLES per operation, default 500).
fuzz: $(VENV)/.dev
	BIN=$(BIN) scripts/fuzz_api.sh

clean:
	rm -rf $(VENV) staticfiles viewer/ohif
