import core.fields
from django.db import migrations


def encrypt_existing(apps, schema_editor):
    """Rows written before encryption are read as plaintext; saving them stores them encrypted."""
    AgentRun = apps.get_model("agents", "AgentRun")
    for run in AgentRun._base_manager.all().iterator(chunk_size=500):
        run.save(update_fields=["input", "result"])


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="agentrun",
            name="input",
            field=core.fields.EncryptedTextField(
                help_text="the task as the person wrote it (shown to the department only)"
            ),
        ),
        migrations.AlterField(
            model_name="agentrun",
            name="result",
            field=core.fields.EncryptedTextField(blank=True, default=""),
        ),
        migrations.RunPython(encrypt_existing, migrations.RunPython.noop),
    ]
