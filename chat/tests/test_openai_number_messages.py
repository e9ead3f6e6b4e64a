"""Bounds in the OpenAI endpoint's error messages are written as people write numbers (1,000,000, not 1e+06)."""

from __future__ import annotations

import pytest

from chat.openai_views import parse_chat_request
from core.errors import InvalidInput


def test_out_of_range_max_tokens_names_its_bounds_plainly():
    with pytest.raises(InvalidInput) as caught:
        parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0})
    assert caught.value.message == "'max_tokens' must be an integer between 1 and 1,000,000."
    assert "e+" not in caught.value.message


def test_fractional_bounds_stay_fractional():
    with pytest.raises(InvalidInput) as caught:
        parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_p": 1.5})
    assert caught.value.message == "'top_p' must be a number between 0 and 1."
