"""Flags and error handling shared by the experiment scripts.

Every script that classifies images takes the same model and data flags,
defined once here; every script reports usage and data errors the same way:
one line `error: ...` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags

# The flags defined here belong to the script that asks for them (its
# `--help` lists them).
flags.disclaim_key_flags()

__all__ = [
    "ConfigFlags",
    "define_config_flags",
    "define_resume_flag",
    "report_errors",
]


def _attribute_docs(config_class: type) -> dict[str, str]:
    """Field -> its text in the class docstring's `Attributes:` section."""
    docs: dict[str, str] = {}
    lines = (config_class.__doc__ or "").split("Attributes:", 1)[-1]
    name = None
    for line in lines.splitlines()[1:]:
        match = re.match(r"^\s{6}(\w+): (.*)$", line)
        if match:
            name = match.group(1)
            docs[name] = match.group(2)
        elif name and line.strip() and line.startswith(" " * 8):
            docs[name] += " " + line.strip()
        elif line.strip():
            break
    return docs


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and (
        type(None) in args
    ):
        return next(a for a in args if a is not type(None)), True
    return hint, False


def _list_item_type(hint: Any) -> type | None:
    """X for `tuple[X, ...]` (or `str | tuple[str, ...]`), else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        tuples = [a for a in typing.get_args(hint) if typing.get_origin(a)]
        hint = tuples[0] if tuples else hint
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0]
    return None


@dataclasses.dataclass(frozen=True)
class _Field:
    holder: flags.FlagHolder
    item_type: type | None
    optional: bool

    def value(self) -> Any:
        value = self.holder.value
        if self.item_type is not None:
            if value is None:
                return None
            try:
                return tuple(self.item_type(v) for v in value)
            except ValueError:
                raise ValueError(
                    f"--{self.holder.name}: expected a comma-separated list "
                    f"of {self.item_type.__name__}, got {','.join(value)!r}"
                ) from None
        if (
            self.optional
            and isinstance(value, str)
            and value.lower()
            in (
                "none",
                "",
            )
        ):
            return None
        return value


class ConfigFlags:
    """Absl flags made from a config dataclass; `value()` builds the config.

    One flag per field, named like the field; the fields of a nested config
    (`models.ModelConfig`, `datasets.DataConfig`) are flags of their own,
    and a nested field called `name` takes the name of the field that holds
    it (`config.model.name` is `--model`). A nested class with a
    `FLAG_PREFIX` puts it in front of its fields' flags (`--plm_a`). Help
    texts come from the classes' `Attributes:` docstrings, defaults from
    `defaults`.
    """

    def __init__(
        self,
        config_class: type,
        defaults: Any = None,
        required: Sequence[str] = (),
        omit: Sequence[str] = (),
        name_flag: str | None = None,
        prefix: str = "",
        flag_values: flags.FlagValues = flags.FLAGS,
    ):
        """Defines the flags.

        Args:
          config_class: a frozen dataclass.
          defaults: an instance giving the flags' defaults (and the values
            of omitted fields); None: the class' own defaults.
          required: flags that must be given.
          omit: flags not to define; their fields keep the defaults.
          name_flag: the flag of a field called `name` (nested configs).
          prefix: put in front of every flag's name.
          flag_values: where to define them (tests use their own).
        """
        self._defaults = config_class() if defaults is None else defaults
        self._fields: dict[str, Any] = {}
        docs = _attribute_docs(config_class)
        hints = typing.get_type_hints(config_class)
        for field in dataclasses.fields(config_class):
            hint = hints[field.name]
            default = getattr(self._defaults, field.name)
            if dataclasses.is_dataclass(hint):
                self._fields[field.name] = ConfigFlags(
                    hint,
                    default,
                    required,
                    omit,
                    field.name,
                    getattr(hint, "FLAG_PREFIX", ""),
                    flag_values,
                )
                continue
            name = prefix + field.name
            if field.name == "name" and name_flag:
                name = name_flag
            if name in omit:
                continue
            help_text = docs.get(field.name, name)
            self._fields[field.name] = _define(
                name,
                hint,
                default,
                help_text,
                name in required,
                flag_values,
            )

    def value(self, **overrides: Any) -> Any:
        """The config from the flags' values (and `overrides`)."""
        values = {name: field.value() for name, field in self._fields.items()}
        return dataclasses.replace(self._defaults, **{**values, **overrides})


def _define(
    name: str,
    hint: Any,
    default: Any,
    help_text: str,
    required: bool,
    flag_values: flags.FlagValues,
) -> _Field:
    hint, optional = _unwrap_optional(hint)
    item_type = _list_item_type(hint)
    kwargs = {"required": required, "flag_values": flag_values}
    if item_type is not None:
        if isinstance(default, str):
            default = (default,)
        default = None if default is None else [str(v) for v in default]
        holder = flags.DEFINE_list(name, default, help_text, **kwargs)
    elif hint is bool:
        holder = flags.DEFINE_bool(name, default, help_text, **kwargs)
    elif hint is int:
        holder = flags.DEFINE_integer(name, default, help_text, **kwargs)
    elif hint is float:
        holder = flags.DEFINE_float(name, default, help_text, **kwargs)
    elif hint is str:
        if optional:
            help_text += " ('none': None)"
        holder = flags.DEFINE_string(
            name, None if required else default, help_text, **kwargs
        )
    else:
        raise TypeError(f"no flag type for field {name}: {hint}")
    return _Field(holder, item_type, optional)


def define_config_flags(
    config_class: type,
    defaults: Any = None,
    required: Sequence[str] = (),
    omit: Sequence[str] = (),
    flag_values: flags.FlagValues = flags.FLAGS,
) -> ConfigFlags:
    """Defines one absl flag per field of a config dataclass (`ConfigFlags`).

    Args:
      config_class: a frozen dataclass, e.g. `runner.Config`.
      defaults: an instance giving the defaults; None: the class' own.
      required: flags that must be given.
      omit: flags not to define (their fields keep the defaults).
      flag_values: where to define them (tests parse their own).

    Returns:
      The flags; `.value()` builds the config after parsing.
    """
    return ConfigFlags(
        config_class, defaults, required, omit, flag_values=flag_values
    )


def define_resume_flag(what: str = "run") -> flags.FlagHolder[bool]:
    """Defines `--resume`.

    Args:
      what: the interrupted work, for the help text.

    Returns:
      The flag holder.
    """
    return flags.DEFINE_bool(
        "resume",
        False,
        f"Continue an interrupted {what} in --workdir (same settings).",
    )


def report_errors(main: Callable[[Sequence[str]], None]):
    """Decorates a script's `main`: usage and data errors end in one line.

    `ValueError` and `OSError` (unknown model, missing folder, bad QF list,
    unreadable weights, unwritable workdir, ...) print `error: <message>` on
    stderr and exit with status 2; anything else is a bug and keeps its
    traceback.

    Args:
      main: the `absl.app.run` main function.

    Returns:
      The decorated function.
    """

    @functools.wraps(main)
    def wrapped(argv: Sequence[str]) -> None:
        try:
            main(argv)
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapped
