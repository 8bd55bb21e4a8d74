"""What each pool's capacity policy learned, kept so that a restarted autoscaler resumes.

One JSON document per pool at `{p}learned:{pool}`, written by the autoscaler every
`autoscaler.keep_learned_s` (and as soon as the measured lead time moves) and read when it
first loads the pool's policy. Plain JSON, never pickle: reading it runs no code. Its layout
is farm.autoscale.policy's (a `schema` number and the policy's `kind` at the top), with the
autoscaler's measured provisioning lead time beside it (`lead_s`: the pool's, whatever the
policy's kind); this book only stores and fetches it. A
document does not grow with the history learned (the predictive one is ~200 KB, most of it
its fixed-size deficit histogram, plus ~20 bytes per arrival of the last `active_s`), so it
is stored uncompressed.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from farm.autoscale.document import MemoryDocError
from farm.store.client import translated
from farm.store.keys import Keys


class LearnedBook:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client  # decodes replies to str
        self.keys = keys or Keys()

    def get(self, pool: str) -> dict[str, Any] | None:
        """The pool's document, None if none is kept; MemoryDocError if what is kept is not
        a JSON object (a pickle an older farm wrote is not even text)."""
        try:
            with translated():
                text = self.client.get(self.keys.learned(pool))
        except UnicodeDecodeError as e:
            raise MemoryDocError(f"the kept value is not text: {e}") from e
        if text is None:
            return None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise MemoryDocError(str(e)) from e
        except RecursionError as e:
            raise MemoryDocError("the kept value nests too deep") from e
        if not isinstance(doc, dict):
            raise MemoryDocError(f"the kept value is JSON but not an object: {text[:40]!r}")
        return doc

    def put(self, pool: str, doc: dict[str, Any]) -> None:
        text = json.dumps(doc, separators=(",", ":"), allow_nan=False)  # strict JSON: no NaN or Infinity
        with translated():
            self.client.set(self.keys.learned(pool), text)
