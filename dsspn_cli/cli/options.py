"""Command-line options made from a settings schema (a pydantic model), so that a setting is
declared once: each top-level single value becomes ``--name`` (``--flag/--no-flag`` for
true/false), a nested setting that names a ``flag`` in its schema gets that option, and every
setting can be given as ``--set key.sub=value``. The options only collect values; the schema
checks them. ``parse_data`` reads the ``--data FORMAT=ROOT`` that train and evaluate share."""

from __future__ import annotations

import inspect
import typing
from typing import Callable, List, Optional

import typer

from dsspn_cli.errors import UserError

SINGLE = (int, float, str, bool)


def _base(annotation):
    """The plain type of a field: int, float, str, bool, a Literal, or something else."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
            # Optional[X] is X; X | dict (one value or one per dataset) is X on the command
            # line, the rest by --set.
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            singles = [a for a in args if _base(a) in SINGLE]
            if len(args) != 1 and not singles:
                return None
            annotation = singles[0] if singles else args[0]
        else:
            return annotation


def _option(key: str, field, flag: str | None = None):
    """(parameter name, annotation, typer.Option) for one setting, or None if it has none."""
    base = _base(field.annotation)
    choices = None
    if typing.get_origin(base) is typing.Literal:
        choices = typing.get_args(base)
        base = type(choices[0])
    if base not in SINGLE:
        return None
    name = flag or "--" + key.replace("_", "-").replace(".", "-")
    help_text = (field.description or "").rstrip(".")
    default = field.get_default(call_default_factory=True)
    if choices:
        help_text += f" (one of {', '.join(map(str, choices))}; default {default})"
    elif default is not None and base is not bool:
        help_text += f" (default: {default})"
    if base is bool:
        negative = "--no-" + name[2:]
        decls = [f"{name}/{negative}"] if default else [name]
        if default:
            help_text += " (default: on)"
    else:
        decls = [name]
    parameter = "setting_" + key.replace(".", "__")
    return parameter, Optional[base], typer.Option(None, *decls, help=help_text,
                                                   show_default=False)


def setting_options(schema) -> dict[str, tuple]:
    """parameter name -> (setting key, annotation, typer.Option), for every option-able
    setting of ``schema``, nested ones included where their schema names a flag."""
    found = {}
    for key, field in schema.model_fields.items():
        made = _option(key, field)
        if made is not None:
            found[made[0]] = (key, made[1], made[2])
            continue
        nested = _base(field.annotation)
        if isinstance(nested, type) and hasattr(nested, "model_fields"):
            for sub, sub_field in nested.model_fields.items():
                flag = (sub_field.json_schema_extra or {}).get("flag")
                made = _option(f"{key}.{sub}", sub_field, flag) if flag else None
                if made is not None:
                    found[made[0]] = (f"{key}.{sub}", made[1], made[2])
    return found


def with_settings(function: Callable, schema) -> Callable:
    """A Typer command: ``function``'s own parameters, then one option per setting of
    ``schema`` and ``--set KEY=VALUE``; ``function`` receives ``settings`` ({key: value} of
    the options given), ``assignments`` (the ``--set`` texts) and ``flags`` ({key: option
    name}, for messages)."""
    hints = typing.get_type_hints(function)      # the real types, not the strings
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(function).parameters.values()
           if p.name not in ("settings", "assignments", "flags")]
    options = setting_options(schema)
    parameters = own + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                          annotation=annotation)
        for name, (_, annotation, option) in options.items()]
    parameters.append(inspect.Parameter(
        "assignments", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[List[str]],
        default=typer.Option(None, "--set", metavar="KEY=VALUE", show_default=False,
                             help="Any setting, nested ones too (head.hidden=64, "
                                  "weights.coco=2); the value is read as YAML; repeat "
                                  "for several.")))

    flags = {key: option.param_decls[0].split("/")[0]
             for key, _, option in options.values()}

    def command(**values):
        settings = {options[name][0]: values.pop(name) for name in list(values)
                    if name in options}
        return function(settings=settings, assignments=values.pop("assignments") or [],
                        flags=flags, **values)

    command.__name__ = function.__name__
    command.__doc__ = function.__doc__
    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


def parse_data(values: list[str] | None) -> dict:
    """``--data FORMAT=ROOT`` values (train, evaluate) -> {format: root}, aliases resolved,
    each format once."""
    data = {}
    for value in values or []:
        if "=" not in value:
            raise UserError(f"--data {value}: write FORMAT=ROOT, like cityscapes=/data/cityscapes")
        fmt, root = value.split("=", 1)
        from dsspn_cli.data.formats import FORMATS, canonical

        key = canonical(fmt)
        if key is None:
            raise UserError(f"--data {value}: unknown format '{fmt.lower()}'; use one of "
                            f"{', '.join(FORMATS)}")
        fmt = key
        if fmt in data:
            raise UserError(f"--data {value}: {fmt} is given twice")
        data[fmt] = root
    return data


__all__ = ["with_settings", "setting_options", "parse_data"]
