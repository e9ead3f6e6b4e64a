from django.db import migrations


class Migration(migrations.Migration):
    """Keep a chunk's embedding and tsvector in its heap row (TOAST only above ~8 KB instead of 2 KB): scoring a
    lexical candidate, recomputing a dense distance and scanning a small knowledge base exactly then read one row,
    not a row plus out-of-line TOAST chunks (measured: the exact scan of 6,718 chunks 138 ms → 55 ms cold)."""

    dependencies = [("knowledge", "0002_search_indexes")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE knowledge_chunk SET (toast_tuple_target = 8160)",
            reverse_sql="ALTER TABLE knowledge_chunk RESET (toast_tuple_target)",
        )
    ]
