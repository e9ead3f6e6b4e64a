from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def staff_user(db: Any, django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="ops", password="x", is_staff=True)
