"""Import an object from a `module:attribute` string with errors a user can act on."""

from __future__ import annotations

import importlib
from types import TracebackType
from typing import Any, Optional


class ImportFromStringError(Exception):
    """One line for the user. `raised`: the exception the module's own code raised
    while it was imported (its traceback shows where), None when the module or the
    attribute does not exist."""

    def __init__(self, message: str, raised: Optional[BaseException] = None) -> None:
        super().__init__(message)
        self.raised = raised


# The frames of the import machinery, above the module's own in a traceback.
_MACHINERY_FILES = (__file__, importlib.__file__)


def _from_the_modules_code(exc: BaseException) -> BaseException:
    """`exc` with its traceback starting at the imported module's first frame: the
    import machinery's frames above it say nothing to the user."""
    tb: Optional[TracebackType] = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename in _MACHINERY_FILES
        or tb.tb_frame.f_code.co_filename.startswith("<frozen importlib")
    ):
        tb = tb.tb_next
    return exc.with_traceback(tb)


def import_from_string(import_str: Any) -> Any:
    if not isinstance(import_str, str):
        return import_str

    module_str, _, attrs_str = import_str.partition(":")
    if not module_str or not attrs_str:
        raise ImportFromStringError(
            f'Import string "{import_str}" must be in format "<module>:<attribute>".'
        )

    try:
        module = importlib.import_module(module_str)
    except ModuleNotFoundError as exc:
        if exc.name and module_str != exc.name and not module_str.startswith(exc.name + "."):
            # The module exists but something it imports does not.
            raise ImportFromStringError(
                f'Could not import module "{module_str}": {exc}.', _from_the_modules_code(exc)
            ) from exc
        raise ImportFromStringError(f'Could not import module "{module_str}".') from exc
    except Exception as exc:
        raise ImportFromStringError(
            f'Could not import module "{module_str}": {type(exc).__name__}: {exc}',
            _from_the_modules_code(exc),
        ) from exc

    instance = module
    try:
        for attr_str in attrs_str.split("."):
            instance = getattr(instance, attr_str)
    except AttributeError:
        raise ImportFromStringError(
            f'Attribute "{attrs_str}" not found in module "{module_str}".'
        ) from None
    return instance
