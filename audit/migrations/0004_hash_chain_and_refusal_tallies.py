"""The hash chain (each row hashed with the one before it), its PostgreSQL trigger, the refusal tallies.

Rows written before this migration are chained here, in id order, with the same encoding the
service uses (``audit.chain``). On PostgreSQL a trigger then refuses UPDATE, DELETE and TRUNCATE
of the trail, whoever asks: the trail can only grow.
"""

import django.utils.timezone
from django.db import migrations, models

from audit import chain

APPEND_ONLY = """
CREATE OR REPLACE FUNCTION audit_auditlog_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % on audit_auditlog refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_auditlog_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_auditlog
    FOR EACH ROW EXECUTE FUNCTION audit_auditlog_append_only();
CREATE TRIGGER audit_auditlog_no_truncate
    BEFORE TRUNCATE ON audit_auditlog
    FOR EACH STATEMENT EXECUTE FUNCTION audit_auditlog_append_only();
"""

DROP_APPEND_ONLY = """
DROP TRIGGER IF EXISTS audit_auditlog_no_truncate ON audit_auditlog;
DROP TRIGGER IF EXISTS audit_auditlog_no_update_or_delete ON audit_auditlog;
DROP FUNCTION IF EXISTS audit_auditlog_append_only();
"""


def chain_existing_rows(apps, schema_editor):
    AuditLog = apps.get_model("audit", "AuditLog")
    prev_hash = chain.GENESIS
    rows = AuditLog.objects.using(schema_editor.connection.alias).order_by("id")
    for row in rows.iterator(chunk_size=2000):
        fields = {name: getattr(row, name) for name in chain.HASHED_FIELDS}
        row_hash = chain.row_digest(prev_hash, fields)
        AuditLog.objects.filter(pk=row.pk).update(prev_hash=prev_hash, row_hash=row_hash)
        prev_hash = row_hash


def add_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPEND_ONLY, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_APPEND_ONLY, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0003_login_actions_and_unconstrained_actor"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditlog",
            name="timestamp",
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False),
        ),
        migrations.AddField(
            model_name="auditlog",
            name="count",
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddField(
            model_name="auditlog",
            name="prev_hash",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditlog",
            name="row_hash",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(chain_existing_rows, migrations.RunPython.noop),
        migrations.RunPython(add_trigger, drop_trigger),
        migrations.CreateModel(
            name="RefusalTally",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("client_address", models.CharField(blank=True, max_length=45)),
                (
                    "action",
                    models.CharField(
                        choices=[
                            ("upload", "Upload"),
                            ("metadata", "Metadata"),
                            ("anonymize", "Anonymize"),
                            ("download", "Download"),
                            ("status", "Status"),
                            ("preview", "Preview"),
                            ("view", "View"),
                            ("bulk_anonymize", "Bulk anonymize"),
                            ("job", "Background job"),
                            ("export", "Export"),
                            ("login", "Login"),
                            ("logout", "Logout"),
                            ("login_failed", "Failed login"),
                        ],
                        max_length=32,
                    ),
                ),
                ("minute", models.DateTimeField(db_index=True)),
                ("count", models.PositiveIntegerField(default=0)),
                ("status_code", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("reason", models.CharField(blank=True, max_length=255)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("client_address", "action", "minute"),
                        name="audit_tally_one_per_address_action_minute",
                    )
                ],
            },
        ),
    ]
