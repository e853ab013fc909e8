"""Import an object from a `module:attribute` string with errors a user can act on."""

from __future__ import annotations

import importlib
from typing import Any


class ImportFromStringError(Exception):
    pass


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
            raise ImportFromStringError(f'Could not import module "{module_str}": {exc}.') from exc
        raise ImportFromStringError(f'Could not import module "{module_str}".') from exc
    except Exception as exc:
        raise ImportFromStringError(
            f'Could not import module "{module_str}": {type(exc).__name__}: {exc}'
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
