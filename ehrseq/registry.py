"""Named extension points: one :class:`Registry` per kind of plug-in (head families, loss terms).

A registry is a dict from lower-case snake_case names to objects, filled once, in one place, when its
module is imported; looking up a name that is not there is a :class:`~ehrseq.errors.ConfigError` that
lists the names (with close matches), in the words the user wrote.
"""

from __future__ import annotations

import difflib
import re
from typing import Generic, TypeVar

from ehrseq.errors import ConfigError

Item = TypeVar("Item")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry(dict[str, Item], Generic[Item]):
    """``name → object`` for one extension point; ``what`` names its entries in messages."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def register(self, name: str, item: Item) -> Item:
        """Add ``item`` under a new lower-case snake_case ``name`` (``ValueError`` otherwise)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{self.what} names are lower-case snake_case, got {name!r}")
        if name in self:
            raise ValueError(f"a {self.what} {name!r} is already registered")
        self[name] = item
        return item

    def lookup(self, name: str) -> Item:
        """The entry registered under ``name``; :class:`ConfigError` naming the alternatives otherwise."""
        try:
            return self[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), list(self), n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ConfigError(f"unknown {self.what} {name!r}{hint}; choose one of {list(self)}") from None
