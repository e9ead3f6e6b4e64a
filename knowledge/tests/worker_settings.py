"""Settings for the real Celery worker started by test_worker.py: the portal's settings plus a short visibility
timeout (so a killed worker's message comes back quickly), small embedding batches (so progress is visible and a
kill lands mid-document) and a key prefix that keeps the test's Redis keys apart from everyone else's."""

import os

from portal.settings import *  # noqa: F403

KNOWLEDGE_EMBED_BATCH = 2
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("KB_TEST_VISIBILITY", "15")),
    "global_keyprefix": os.environ["KB_TEST_KEYPREFIX"],
    # look for abandoned messages every 2 s (kombu's default sweep is about 100 s)
    "unacked_restore_interval": 2,
    "unacked_restore_throttle": 1,
}
