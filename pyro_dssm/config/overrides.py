"""A Hydra command line checked against the schema before Hydra runs it: one line per mistake.

Hydra composes the config before the task function runs, and reports a bad
override in its own words, over several lines, with exit code 1.
:func:`check_command_line` composes the same overrides first, with Hydra's
compose API, and turns the first failure into a ``ValueError`` of one line::

    trainer.nonsense=3  ->  trainer.nonsense is not a trainer setting (expected one of ['n_epochs', ...])
    trainer.lr=abc      ->  trainer.lr must be a number, got 'abc'
    data.n_states=2.5   ->  data.n_states must be an integer, got 2.5
    data=nonexistent    ->  data=nonexistent is not a data option (expected one of ['csv', 'hard', ...])

A key added with ``+`` (``+trainer.nonsense=3``) passes Hydra; the composed
config is then held to its dataclasses too. Under ``-m`` every value of a
sweep (``seed=0,1,2``) is composed once. Range checks are not made here but by
the dataclasses, when ``train()`` builds them (:mod:`pyro_dssm.config.checks`).
"""

from __future__ import annotations

import dataclasses
import re
import typing

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser  # Hydra's own command-line parser, as @hydra.main uses it
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

import pyro_dssm.config.schema  # noqa: F401 (registers the schema the YAML files start from)

KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def check_command_line(config_dir: str, config_name: str, argv: list[str]) -> None:
    """Raise ValueError with one line if Hydra would refuse the overrides in ``argv`` (``sys.argv[1:]``).

    Flags that change where the config comes from or print help are left to Hydra.
    """
    args = get_args_parser().parse_args(argv)
    if (args.help or args.hydra_help or args.info or args.shell_completion or args.config_path or args.config_name
            or args.config_dir or args.experimental_rerun):
        return
    parser = OverridesParser.create()
    for line in args.overrides:  # one at a time, so that a syntax error names its override
        try:
            parser.parse_override(line)
        except HydraException as exc:
            raise ValueError(f"cannot read the override {line!r}: {str(exc).splitlines()[0]}") from None
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        for overrides in _compositions(args.overrides, args.multirun):
            try:
                cfg = compose(config_name=config_name, overrides=overrides)
            except (HydraException, OmegaConfBaseException) as exc:
                raise ValueError(describe(exc, overrides)) from None
            check_keys(cfg)


def _compositions(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists to compose: the command line, or under ``-m`` each value of each sweep once."""
    if not multirun:
        return [list(overrides)]
    parser = OverridesParser.create()
    plain, sweeps = [], []
    for line in overrides:
        override = parser.parse_override(line)
        try:
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else None
        except HydraException:  # e.g. interval(0, 1) for a sweeper plugin: no values to list
            continue
        if values is None:
            plain.append(line)
        else:
            sweeps.append([f"{override.get_key_element()}={v}" for v in values])
    first = [values[0] for values in sweeps]
    runs = [plain + first]
    for i, values in enumerate(sweeps):
        runs += [plain + first[:i] + [v] + first[i + 1:] for v in values[1:]]
    return runs


def check_keys(cfg: DictConfig, prefix: str = "") -> None:
    """Every key of a structured node is a field of its dataclass (a ``+key=value`` override may add others)."""
    cls = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(cls):
        known = [f.name for f in dataclasses.fields(cls)]
        for key in cfg:
            if key not in known:
                raise ValueError(unknown_key(f"{prefix}{key}", cls))
    for key in cfg:
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            check_keys(node, f"{prefix}{key}.")


def unknown_key(full_key: str, cls) -> str:
    """``trainer.nonsense is not a trainer setting (expected one of [...])``."""
    group = full_key.rpartition(".")[0]
    line = f"{full_key} is not {f'a {group} setting' if group else 'a setting'}"
    if dataclasses.is_dataclass(cls):
        line += f" (expected one of {[f.name for f in dataclasses.fields(cls)]})"
    return line


PRESET_KEY = re.compile(r"In '(\w+)/(\w+)': Config\w*Error raised while composing config:.*?"
                        r"full_key:\s*(data\.\w+)\s+object_type=(\w+)", re.DOTALL)


def describe(exc: Exception, overrides: list[str]) -> str:
    """One line for a composition error: the key or option at fault and what was expected."""
    if isinstance(exc, MissingConfigException) and exc.options is not None and exc.missing_cfg_file:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return f"{group}={name} is not a {group} option (expected one of {sorted(exc.options)})"
    cause = exc if isinstance(exc, OmegaConfBaseException) else exc.__cause__
    full_key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and full_key:
        return unknown_key(full_key, cause.object_type)
    if isinstance(cause, ValidationError) and full_key:
        given = _given(full_key, overrides)
        if given is not _NOT_GIVEN:
            return f"{full_key} must be {_kind(cause.object_type, cause.key)}, got {given!r}"
        return f"{full_key}: {str(cause).splitlines()[0]}"
    preset = PRESET_KEY.search(str(exc))  # a group file that sets another group's key (model=motion's data.*)
    if preset:
        group, name, key, cls = preset.groups()
        return (f"{group}={name} sets {key}, which {cls} has not: use {group}={name} with a data source that has "
                f"it (data=csv or data=npz)")
    first = str(cause).splitlines()[0] if cause is not None else ""  # OmegaConf's next lines name the node again
    return " ".join(str(exc).split()) + (f"; {first}" if first else "")  # Hydra's message, on one line


_NOT_GIVEN = object()


def _given(full_key: str, overrides: list[str]):
    """The value the command line gives ``full_key`` (parsed: ``2.5``, ``'abc'``), or ``_NOT_GIVEN``."""
    parser = OverridesParser.create()
    for line in reversed(overrides):  # the last one wins, as in Hydra
        override = parser.parse_override(line)
        if override.key_or_group == full_key:
            return override.value()
    return _NOT_GIVEN


def _kind(cls, key) -> str:
    """What field ``key`` of dataclass ``cls`` holds, in words: ``an integer``, ``null or a string``, ..."""
    try:
        hint = typing.get_type_hints(cls)[key]
    except Exception:  # not a dataclass of ours (e.g. Hydra's own), or an annotation that does not resolve
        return "of the field's type"
    return _kind_of(hint)


def _kind_of(hint) -> str:
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return "null or " + (_kind_of(rest[0]) if len(rest) == 1 else "one of " + ", ".join(map(str, rest)))
    if typing.get_origin(hint) is list:
        return "a list"
    return KINDS.get(hint, f"a {getattr(hint, '__name__', hint)}")
