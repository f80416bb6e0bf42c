"""The job queue's layering: services enqueue by task path, never import ``dicom.tasks``; one module
touches django-tasks-db; each job body registers how to give up its work."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicom import tasks
from dicom.services import task_queue

PROJECT = Path(__file__).resolve().parents[3]
SERVICES = PROJECT / "dicom" / "services"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` anywhere in the file names (at any depth)."""
    names: set[str] = set()
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # A relative import (level 1 is the file's own package) resolved to its absolute name.
            parent = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*parent, *([node.module] if node.module else [])])
            names.add(base)
            # ``from dicom import tasks`` imports the module dicom.tasks.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


SERVICE_FILES = sorted(SERVICES.rglob("*.py"))
SERVICE_MODULES = [_module_name(path) for path in SERVICE_FILES]


@pytest.mark.parametrize("path", SERVICE_FILES, ids=[_module_name(p) for p in SERVICE_FILES])
def test_no_service_imports_the_tasks_module(path):
    imported = _imported_modules(path)
    assert not {name for name in imported if name == "dicom.tasks" or name.startswith("dicom.tasks.")}


def test_only_the_task_queue_adapter_imports_django_tasks_db():
    importers = {
        _module_name(path)
        for path in (PROJECT / "dicom").rglob("*.py")
        if "tests" not in path.relative_to(PROJECT).parts
        and any(name.split(".")[0] == "django_tasks_db" for name in _imported_modules(path))
    }
    assert importers == {"dicom.services.task_queue"}


def test_the_task_paths_name_the_tasks():
    assert tasks.anonymize_file_task.module_path == task_queue.ANONYMIZE_FILE
    assert tasks.anonymize_bulk_items_task.module_path == task_queue.ANONYMIZE_BULK_ITEMS


def test_every_task_has_a_give_up_handler():
    for path in (task_queue.ANONYMIZE_FILE, task_queue.ANONYMIZE_BULK_ITEMS):
        assert callable(task_queue.give_up_handler(path))
    assert task_queue.give_up_handler("dicom.tasks.no_such_task") is None


# Each module first in a fresh interpreter, Django set up but the dicom app's ready() (which imports
# dicom.tasks on purpose) left out: the module imports without dicom.tasks, which then imports after it.
_FIRST_IMPORT = """
import importlib, sys
import dicom.apps
dicom.apps.DicomConfig.ready = lambda self: None
import django
django.setup()
importlib.import_module(sys.argv[1])
assert sys.argv[1] == "dicom.tasks" or "dicom.tasks" not in sys.modules, "imported dicom.tasks"
importlib.import_module("dicom.tasks")
"""


def test_every_service_module_and_the_tasks_import_first_in_a_fresh_interpreter():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "dicomsite.settings"}
    runs = {
        module: subprocess.Popen(
            [sys.executable, "-c", _FIRST_IMPORT, module],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in ["dicom.tasks", *SERVICE_MODULES]
    }
    failures = {}
    for module, run in runs.items():
        _, stderr = run.communicate(timeout=120)
        if run.returncode != 0:
            failures[module] = stderr.strip().splitlines()[-1:]
    assert failures == {}
