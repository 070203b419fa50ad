"""Surfacing our own errors through Ray's wrappers, so users see the file and line, not a trace."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from raykd.errors import InputError


def find_input_error(err: BaseException) -> InputError | None:
    """The InputError behind a Ray task failure, rebuilt from its attributes.

    Ray rewrites the first argument of a task's exception (appending retry notes), but the
    instance attributes survive pickling, so they give back the original message.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, InputError) and hasattr(e, "message"):
            return InputError(e.path.split("\n", 1)[0], e.message, e.line, e.row)
        stack.extend([e.__cause__, e.__context__, getattr(e, "cause", None)])
    return None


@contextmanager
def unwrap_ray_error() -> Iterator[None]:
    """Re-raise an InputError raised inside a Ray task as a plain InputError."""
    try:
        yield
    except InputError as err:
        if type(err) is InputError:
            raise
        raise find_input_error(err) from None
    except Exception as err:
        cause = find_input_error(err)
        if cause is None:
            raise
        raise cause from None
