"""The command lines of ``pyro_dssm.decode`` and ``pyro_dssm.gather``: ``key=value`` arguments, like train's.

Each command declares its arguments as a dataclass (the schema, as train's
config groups are); :func:`parse` merges the ``key=value`` arguments into
``OmegaConf.structured(schema)``, so an unknown key, a value of the wrong type
or a missing required key (a field without default, ``MISSING``) is refused
before the command runs. Values are taken verbatim as text and converted by
the field's type: a path such as ``1e3``, ``007`` or ``a${b}`` stays the name it is.
:func:`main` turns a ``ValueError`` (and ``TypeError``) into one line on
stderr and exit status 2, an ``OSError`` into exit status 1, with no traceback;
``HYDRA_FULL_ERROR=1`` shows it, as for train.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any, Callable, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


def parse(schema: type[T], argv: list[str]) -> T:
    """``key=value`` arguments -> an instance of the dataclass ``schema``; ValueError naming a bad or missing one."""
    keys = [f.name for f in dataclasses.fields(schema)]
    values: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in keys:
            raise ValueError(f"expected arguments key=value with key in {tuple(keys)}, got {arg!r}")
        values[key] = value
    cfg = OmegaConf.structured(schema)
    for key, value in values.items():
        try:
            # converted (and checked) by the field's type; "${" escaped: values are not interpolated
            setattr(cfg, key, value.replace("${", "\\${"))
        except OmegaConfBaseException as exc:
            raise ValueError(f"{key}={value!r}: {str(exc).splitlines()[0]}") from None
    missing = [key for key in keys if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise ValueError(f"missing {', '.join(f'{key}=...' for key in missing)} (required)")
    return OmegaConf.to_object(cfg)


def main(parse_args: Callable[[list[str]], T], run: Callable[[T], Any], argv: list[str], usage: str) -> int:
    """``run(parse_args(argv))``; returns the exit status (module docstring).

    ``parse_args`` is :func:`parse` with the command's schema and its own checks.
    ``-h`` / ``--help`` prints ``usage``. Logs go to stdout, so stderr holds only the error line.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.captureWarnings(True)
    if any(arg in ("-h", "--help") for arg in argv):
        print(usage)
        return 0
    try:
        run(parse_args(argv))
    except (ValueError, TypeError, OSError) as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(" ".join(f"error: {exc}".split("\n")), file=sys.stderr)
        return 1 if isinstance(exc, OSError) else 2
    return 0
