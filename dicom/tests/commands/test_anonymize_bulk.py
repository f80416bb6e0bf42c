"""``manage.py anonymize_bulk`` in-process: sources, filters, options, dry run, idempotence, refusals."""

import datetime as dt
import io
import shutil

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from pydicom import dcmread

from audit.models import AuditLog
from dicom.models import BulkItem, BulkRun, DicomFile
from dicom.tests.commands.conftest import PATIENT_PREFIX, stored_dicom_keys
from dicom.tests.services.dicom_builders import TEXT_CASES, build_text_case

pytestmark = pytest.mark.django_db


def bulk(*args: str) -> str:
    out = io.StringIO()
    call_command("anonymize_bulk", *args, stdout=out)
    return out.getvalue()


def derived_of(*originals) -> list[DicomFile]:
    return list(DicomFile.objects.filter(source__in=originals, anonymized=True))


def test_all_deidentifies_every_stored_original_once_as_the_system_account(
    user, store_original, storage_root
):
    originals = [store_original(user), store_original(user, modality="MR")]
    out = bulk("--all")

    derived = derived_of(*originals)
    assert len(derived) == 2
    assert {d.source_id for d in derived} == {o.id for o in originals}
    system = get_user_model().objects.get(username="dicom-system")
    assert not system.is_active and not system.has_usable_password()
    for file in derived:
        assert file.status == DicomFile.Status.COMPLETED and file.owner == system
        assert (storage_root / file.storage_key).exists()
        stored = dcmread(storage_root / file.storage_key)
        assert stored.PatientIdentityRemoved == "YES"
        assert PATIENT_PREFIX not in str(stored.PatientName)
        assert file.metadata["patient_identity_removed"] == "YES"
    per_file = AuditLog.objects.filter(action=AuditLog.Action.BULK_ANONYMIZE, file_id__isnull=False)
    assert sorted(str(row.file_id) for row in per_file) == sorted(str(d.id) for d in derived)
    assert {row.username for row in per_file} == {"dicom-system"}
    summary = AuditLog.objects.get(action=AuditLog.Action.BULK_ANONYMIZE, file_id__isnull=True)
    assert summary.success and "2 done" in summary.reason
    assert "2 done, 0 skipped" in out
    # --all leaves out originals that already have a de-identified file.
    assert "0 to do" in bulk("--all", "--retain-uids")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--study-type", "ct"], {"alice-ct"}),
        (["--modality", "MR"], {"alice-mr-old", "bob-mr"}),
        (["--owner", "alice"], {"alice-ct", "alice-mr-old"}),
        (["--uploaded-before", "2020-01-01"], {"alice-mr-old"}),
        (["--uploaded-after", "2020-01-01", "--owner", "alice"], {"alice-ct"}),
        (["--modality", "MR", "--uploaded-after", "2020-01-01T00:00:00+00:00"], {"bob-mr"}),
    ],
)
def test_filters_select_stored_originals(user, other_user, store_original, args, expected):
    files = {
        "alice-ct": store_original(user, study_type="ct"),
        "alice-mr-old": store_original(user, modality="MR", study_type="mri"),
        "bob-mr": store_original(other_user, modality="MR", study_type="mri"),
    }
    DicomFile.objects.filter(pk=files["alice-mr-old"].pk).update(
        created_at=dt.datetime(2019, 6, 1, tzinfo=dt.UTC)
    )
    bulk(*args)
    chosen = {name for name, file in files.items() if derived_of(file)}
    assert chosen == expected


def test_file_id_is_repeatable_and_unknown_ids_select_nothing(user, store_original):
    first, second, third = store_original(user), store_original(user), store_original(user)
    bulk("--file-id", str(first.id), "--file-id", str(third.id))
    assert derived_of(first) and derived_of(third) and not derived_of(second)
    with pytest.raises(CommandError, match="not a file id"):
        bulk("--file-id", "not-a-uuid")


def test_options_are_flags_with_the_api_names(user, store_original, storage_root):
    original = store_original(user)
    source_uid = original.sop_instance_uid
    bulk("--file-id", str(original.id), "--retain-uids", "--clean-descriptors")
    (derived,) = derived_of(original)
    assert derived.deid_options == ["retain_uids", "clean_descriptors"]
    assert dcmread(storage_root / derived.storage_key).SOPInstanceUID == source_uid


def test_a_directory_to_an_output_dir_writes_the_uid_layout_and_stores_nothing(
    dicom_tree, tmp_path, storage_root
):
    tree = dicom_tree(5, non_dicom=2)
    out_dir = tmp_path / "out"
    out = bulk("--from-dir", str(tree), "--output-dir", str(out_dir))

    outputs = sorted(p for p in out_dir.rglob("*.dcm") if ".partial" not in p.parts)
    assert len(outputs) == 5
    for path in outputs:
        dataset = dcmread(path)
        assert path.relative_to(out_dir).parts == (
            dataset.StudyInstanceUID,
            dataset.SeriesInstanceUID,
            f"{dataset.SOPInstanceUID}.dcm",
        )
        assert PATIENT_PREFIX not in str(dataset.PatientName)
        assert PATIENT_PREFIX.encode() not in path.read_bytes()
    assert DicomFile.objects.count() == 0
    assert stored_dicom_keys(storage_root) == []
    assert "5 done" in out and "2 not DICOM" in out
    run = BulkRun.objects.get()
    assert run.not_dicom == 2 and run.done == 5
    recorded = run.items.filter(status=BulkItem.Status.DONE).values_list("output_path", flat=True)
    assert sorted(recorded) == sorted(str(path.relative_to(out_dir)) for path in outputs)
    assert AuditLog.objects.filter(action=AuditLog.Action.BULK_ANONYMIZE, file_id__isnull=False).count() == 5


def test_a_directory_without_output_dir_stores_results_like_uploads(dicom_tree, storage_root, user):
    tree = dicom_tree(4, non_dicom=1)
    bulk("--from-dir", str(tree), "--study-type", "research", "--user", "alice")

    files = list(DicomFile.objects.all())
    assert len(files) == 4
    assert {f.anonymized for f in files} == {True}
    assert {f.study_type for f in files} == {"research"}
    assert {f.owner for f in files} == {user}
    keys = stored_dicom_keys(storage_root)
    assert len(keys) == 4
    # The originals never reached storage: no stored byte carries a patient's name.
    assert not any(PATIENT_PREFIX.encode() in key.read_bytes() for key in keys)
    assert AuditLog.objects.filter(file_id__in=[f.id for f in files], username="alice").count() == 4


def test_dry_run_writes_nothing(dicom_tree, tmp_path, storage_root, user, store_original):
    store_original(user)
    rows_before = (DicomFile.objects.count(), AuditLog.objects.count())
    tree = dicom_tree(3, non_dicom=1)
    out = bulk("--from-dir", str(tree), "--output-dir", str(tmp_path / "out"), "--dry-run")
    assert "would de-identify 3" in out and "1 not DICOM" in out
    assert "would de-identify 1" in bulk("--all", "--dry-run")
    assert not list((tmp_path / "out").rglob("*.dcm"))
    assert (DicomFile.objects.count(), AuditLog.objects.count()) == rows_before
    assert not BulkRun.objects.exists()
    assert not get_user_model().objects.filter(username="dicom-system").exists()
    assert len(stored_dicom_keys(storage_root)) == 1


def test_a_second_run_does_nothing_new(dicom_tree, tmp_path):
    tree = dicom_tree(4, non_dicom=1)
    args = ("--from-dir", str(tree), "--output-dir", str(tmp_path / "out"))
    bulk(*args)
    files_after_first = sorted(tmp_path.joinpath("out").rglob("*.dcm"))
    file_rows = AuditLog.objects.filter(file_id__isnull=False).count()

    out = bulk(*args)
    assert "0 done, 4 skipped" in out
    assert sorted(tmp_path.joinpath("out").rglob("*.dcm")) == files_after_first
    assert AuditLog.objects.filter(file_id__isnull=False).count() == file_rows
    assert BulkRun.objects.count() == 1 and BulkItem.objects.count() == 5
    # A dry run now agrees that everything is done.
    assert "would de-identify 0" in bulk(*args, "--dry-run")


def test_different_options_are_a_different_run(dicom_tree, tmp_path):
    tree = dicom_tree(2)
    bulk("--from-dir", str(tree), "--output-dir", str(tmp_path / "a"))
    bulk("--from-dir", str(tree), "--output-dir", str(tmp_path / "b"), "--retain-device-identity")
    assert BulkRun.objects.count() == 2
    assert len(list((tmp_path / "b").rglob("*.dcm"))) == 2


def test_refused_files_are_reported_with_grouped_reasons_and_not_retried(dicom_tree, tmp_path):
    tree = dicom_tree(3)
    truncated = sorted(tree.rglob("*.dcm"))[0]
    truncated.write_bytes(truncated.read_bytes()[:2000])
    args = ("--from-dir", str(tree), "--output-dir", str(tmp_path / "out"))
    out = bulk(*args)
    assert "2 done" in out and "1 refused" in out
    assert "refused: 1 x " in out
    item = BulkItem.objects.get(status=BulkItem.Status.REFUSED)
    assert item.detail and PATIENT_PREFIX not in item.detail
    refused_audit = AuditLog.objects.get(file_id=item.output_id)
    assert not refused_audit.success and refused_audit.reason == item.detail
    assert "0 done, 2 skipped (done before), 1 refused" in bulk(*args)


def test_burned_in_text_is_refused_in_bulk_unless_cleaned(dicom_tree, tmp_path):
    tree = dicom_tree(2)
    case = next(case for case in TEXT_CASES if case.name == "us-speckle-text")
    build_text_case(case, tree / "text.dcm")
    out = bulk("--from-dir", str(tree), "--output-dir", str(tmp_path / "out"))
    assert "2 done" in out and "1 refused" in out
    item = BulkItem.objects.get(status=BulkItem.Status.REFUSED)
    assert item.detail.startswith("burned-in text was found in the pixel data; resend with clean_pixel_data")
    assert "accept_burned_in_annotation" in item.detail and "Text at frame 1 at x=" in item.detail
    cleaned = bulk("--from-dir", str(tree), "--output-dir", str(tmp_path / "clean"), "--clean-pixel-data")
    assert "3 done" in cleaned and "0 refused" in cleaned


def test_a_failed_file_makes_the_exit_status_non_zero_and_a_rerun_retries_it(
    user, store_original, storage_root
):
    original = store_original(user)
    moved = storage_root / "elsewhere.dcm"
    shutil.move(storage_root / original.storage_key, moved)
    with pytest.raises(CommandError) as raised:
        bulk("--file-id", str(original.id))
    assert raised.value.returncode == 1
    item = BulkItem.objects.get()
    assert item.status == BulkItem.Status.FAILED and "internal error" in item.detail
    assert not AuditLog.objects.get(file_id__isnull=True, action=AuditLog.Action.BULK_ANONYMIZE).success

    shutil.move(moved, storage_root / original.storage_key)
    out = bulk("--file-id", str(original.id))
    assert "1 done" in out and "0 failed" in out
    assert len(derived_of(original)) == 1


def test_two_local_worker_processes(dicom_tree, storage_root):
    tree = dicom_tree(12, non_dicom=1)
    out = bulk("--from-dir", str(tree), "--workers", "2", "--batch-size", "5")
    assert "12 done" in out
    assert DicomFile.objects.filter(anonymized=True).count() == 12
    assert len(stored_dicom_keys(storage_root)) == 12
    assert BulkItem.objects.filter(status=BulkItem.Status.DONE).count() == 12


def test_bad_arguments_are_command_errors(tmp_path, dicom_tree):
    with pytest.raises(CommandError, match="choose a source"):
        bulk()
    with pytest.raises(CommandError, match="no user named"):
        bulk("--all", "--user", "nobody")
    with pytest.raises(CommandError, match="no user named"):
        bulk("--owner", "nobody")
    with pytest.raises(CommandError, match="--output-dir goes with --from-dir"):
        bulk("--all", "--output-dir", str(tmp_path))
    with pytest.raises(CommandError, match="alternatives"):
        bulk("--all", "--retain-full-dates", "--retain-modified-dates")
    tree = dicom_tree(1)
    with pytest.raises(CommandError, match="inside"):
        bulk("--from-dir", str(tree), "--output-dir", str(tree / "out"))
