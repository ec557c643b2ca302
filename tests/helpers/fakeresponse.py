"""A stand-in for an aiohttp response, for narrow tests of the client's classification."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp


class FakeResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required `stream_writer` (aioresponses
    issue #289); aiohttp 3.14 is a security release, so the mock gets the argument instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)
