"""Process environment variables changed for a block of code and put back after it."""

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping


@contextlib.contextmanager
def changed_environment(set_to: Mapping[str, str] | None = None, keep: Iterable[str] = ()) -> Iterator[None]:
    """``set_to`` set in ``os.environ`` inside the block; after it, those variables and the ``keep`` ones (which
    code inside the block may change) have their previous values again (unset where they were unset)."""
    set_to = dict(set_to or {})
    saved = {name: os.environ.get(name) for name in [*set_to, *keep]}
    os.environ.update(set_to)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
