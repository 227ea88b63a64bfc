"""Schemas of a paper's YAML files, declared once: pydantic models whose errors are one line.

A file's schema is a tree of `Model`s (unknown keys forbidden, strict types: `true` is not a
number, `"5"` is not an integer); `validate` reads a file's content into it and turns the first
problem into a ConfigError that names the field and what it may be:

    published.yaml rows[3] (time_saving).ours.stat: 'flops' is not one of macs, params
    regime.criteria[0].tolerance: unknown key (allowed for overfits: check, arms, max_train_error,
        min_gap)
    regime.criteria[0].last_epochs: 0 must be an integer >= 1

A field's docstring is its description in the JSON schemas that `python -m common.schema` writes
to `schemas/` (`--check`: one line when they are stale), which an editor uses for completion and
help on `params.yaml` and `published.yaml` (see the README).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, ValidationError
from pydantic.fields import FieldInfo

REPO = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO / "schemas"
# file name -> the model of that file, as "module:Class" (imported when the schemas are written)
SCHEMAS = {
    "params.schema.json": "common.params:Params",
    "published.schema.json": "common.published:Published",
}


class ConfigError(ValueError):
    """Bad user input: the message is one line naming the field and the allowed values."""


class Model(BaseModel):
    """A section of a YAML file: unknown keys are errors, types are strict, values are frozen;
    each field's docstring documents it in the JSON schema."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True
    )


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, *, where: str = "", loc: tuple[str | int, ...] = ()) -> M:
    """`data` as a `model`, or a one-line ConfigError naming the field.

    `where` names the file (`published.yaml`), `loc` the place of `data` in it (`("regime",)`):
    both open the field's path in the message.
    """
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise config_error(err, model, data, where=where, loc=loc) from None


def config_error(
    err: ValidationError, model: Any, data: Any, *, where: str = "", loc: tuple = ()
) -> Exception:
    """The first error of `err` (raised validating `data` as `model`) as one ConfigError line:
    `<path>: <what is wrong>`, in the words of the hand-written checks (choices listed, bounds
    given, the allowed keys of a mapping)."""
    error = err.errors(include_url=False)[0]
    if isinstance((error.get("ctx") or {}).get("error"), ConfigError):  # a check across fields
        return error["ctx"]["error"]  # (model_post_init) names its fields itself
    step = _walk(model, data, error["loc"])
    value, kind, ctx = error["input"], error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        keys = ", ".join(step.parent.model_fields) if step.parent else ""
        what = f"unknown key (allowed{f' for {step.tag}' if step.tag else ''}: {keys})"
    elif kind == "missing":
        fields = step.parent.model_fields if step.parent else {}
        required = [name for name, field in fields.items() if field.is_required()]
        which = f"{step.tag} needs" if step.tag else "required:"
        what = f"missing ({which} {', '.join(required)})"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = ", ".join(sorted(_tags(step.annotation)))
        step.path.append(ctx["discriminator"].strip("'"))
        what = (
            f"missing (one of {tags})"
            if "tag" not in ctx
            else f"{ctx['tag']!r} is not one of {tags}"
        )
    elif kind in ("literal_error", "enum"):
        what = f"{value!r} is not one of {', '.join(sorted(map(str, _choices(step.annotation))))}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign, bound = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
                       "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}[kind]  # fmt: skip
        number = "an integer" if _is(step.annotation, int) else "a number"
        what = f"{value!r} must be {number} {sign} {ctx[bound]:g}"
    elif kind in ("too_short", "too_long"):
        what = _length(value, step.field) + _gloss(step.field)
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        base, tags = _unwrap(step.annotation)[0], sorted(_tags(step.annotation))
        hint = f"keys: {', '.join(base.model_fields)}" if _is_model(base) else ""
        hint = f"kinds: {', '.join(tags)}" if tags else hint
        what = f"{value!r} must be a mapping" + (f" ({hint})" if hint else "")
    elif kind == "list_type":
        what = f"{value!r} must be a list" + _gloss(step.field)
    elif kind.endswith("_type") or kind.endswith("_parsing"):
        what = f"{value!r} is not of type {_type_name(step.annotation)}" + _gloss(step.field)
    elif kind in ("value_error", "assertion_error"):
        what = str(ctx.get("error", error["msg"]))
    else:
        what = f"{value!r}: {error['msg']}"
    path = field_path(step.path, where=where, loc=loc)
    return ConfigError(" ".join(f"{path}: {what}".split()))


def field_path(parts: list[str], *, where: str = "", loc: tuple = ()) -> str:
    """`where loc.parts`, as the messages print a field: `published.yaml rows[3] (id).ours`."""
    text = ""
    for part in [*(_part(p) for p in loc), *parts]:
        text += part if part.startswith("[") or not text else f".{part}"
    return " ".join(s for s in (where, text) if s)


def _part(part: str | int) -> str:
    return f"[{part}]" if isinstance(part, int) else str(part)


class _Step:
    """Where `_walk` ended: the printed path, the annotation there, its field, the model holding
    that field, and that model's tag where it is a tagged union's member (a row's kind, a check)."""

    def __init__(self, annotation: Any) -> None:
        self.path: list[str] = []
        self.annotation, self.field, self.parent, self.tag = annotation, None, None, None


def _walk(model: Any, data: Any, error_loc: tuple[str | int, ...]) -> _Step:
    """Follow an error's location through the model's types and the data: the path to print
    (list items with an `id` named by it; union tags left out) and what the field there is."""
    step, node, container, tag = _Step(model), data, Any, None
    for part in error_loc:
        members = _tags(step.annotation)
        if part in members:  # a tagged union's tag (the kind of a row), not a key of the data
            step.annotation, tag = members[part], str(part)
            continue
        annotation = _optional(_unwrap(step.annotation)[0])
        if part == "[key]":  # a mapping's key is not one of its allowed keys
            step.annotation, step.field = (typing.get_args(container) or (Any,))[0], None
            continue
        if _is_model(annotation):  # a field, or an unknown key: either way named in the path
            step.parent, step.field = annotation, annotation.model_fields.get(part)
            step.tag, tag = tag, None
            step.annotation = _field_type(step.field) if step.field else Any
            step.path.append(str(part))
        elif typing.get_origin(annotation) in (list, dict) and typing.get_args(annotation):
            step.annotation, step.field = typing.get_args(annotation)[-1], None
            item = _item(node, part)
            name = item.get("id") if isinstance(item, dict) else None
            named = f" ({name})" if isinstance(name, str) and name else ""
            step.path.append(_part(part) + named)
        else:  # a type the walk does not model (Any, a plain union's member): stop here
            break
        container, node = annotation, _item(node, part)
    return step


def _item(node: Any, part: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return None


def _field_type(field: FieldInfo) -> Any:
    """A field's annotation with its metadata (a union's discriminator among them)."""
    marks = [*field.metadata]
    if field.discriminator is not None:
        marks.append(Discriminator(field.discriminator))
    return Annotated[field.annotation, *marks] if marks else field.annotation


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """(type, metadata) of a possibly Annotated type."""
    if typing.get_origin(annotation) is Annotated:
        base, *metadata = typing.get_args(annotation)
        inner, more = _unwrap(base)
        return inner, [*metadata, *more]
    return annotation, []


def _optional(annotation: Any) -> Any:
    """X of `X | None`; anything else as it is."""
    args = _union_args(annotation)
    rest = [a for a in args if a is not type(None)]
    return _unwrap(rest[0])[0] if args and len(rest) == 1 else annotation


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return ()


def _tags(annotation: Any) -> dict[str, Any]:
    """tag -> member of a tagged union (told apart by a field such as `check`, or by `Tag`s and
    a function); {} for any other type."""
    base, marks = _unwrap(annotation)
    if _union_args(base) and _optional(base) is not base:  # `Union[...] | None`
        base, more = _unwrap(next(a for a in _union_args(base) if a is not type(None)))
        marks = [*marks, *more]
    found = [m.discriminator for m in marks if isinstance(m, Discriminator | FieldInfo)]
    discriminator = next((d for d in found if d is not None), None)
    if discriminator is None:
        return {}
    members = {}
    for member in _union_args(base):
        inner, member_marks = _unwrap(member)
        tag = next((m.tag for m in member_marks if isinstance(m, Tag)), None)
        if tag is None and isinstance(discriminator, str) and _is_model(inner):
            tag = _choices(inner.model_fields[discriminator].annotation)[0]
        members[tag] = inner
    return members


def _choices(annotation: Any) -> list[Any]:
    """The values of a Literal (or of each Literal in a union)."""
    base = _optional(_unwrap(annotation)[0])
    if typing.get_origin(base) is Literal:
        return list(typing.get_args(base))
    return [v for a in _union_args(base) for v in _choices(a)]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is(annotation: Any, kind: type) -> bool:
    return _optional(_unwrap(annotation)[0]) is kind


def _type_name(annotation: Any) -> str:
    """`float`, `int or null`, `str`: the field's type as the messages name it."""
    base = _unwrap(annotation)[0]
    args = _union_args(base)
    if args:
        return " or ".join(_type_name(a) for a in args)
    if base is type(None):
        return "null"
    if _is_model(base) or typing.get_origin(base) is dict or base is dict:
        return "mapping"
    origin = typing.get_origin(base)
    return getattr(origin or base, "__name__", str(base))


def _length(value: Any, field: FieldInfo | None) -> str:
    """What a list's length must be, from the field's min_length and max_length."""
    bounds = {type(m).__name__: m for m in (field.metadata if field else [])}
    low = getattr(bounds.get("MinLen"), "min_length", None)
    high = getattr(bounds.get("MaxLen"), "max_length", None)
    if low == high and low is not None:
        return f"{value!r} must be a list of exactly {low}"
    if low == 1 and high is None:
        return "must be a non-empty list"
    limits = [f"at least {low}" if low else "", f"at most {high}" if high is not None else ""]
    return f"{value!r} must be a list of {' and '.join(x for x in limits if x)}"


def _gloss(field: FieldInfo | None) -> str:
    """` (the field's description)`, its first sentence, where it has one."""
    if field is None or not field.description:
        return ""
    first = re.split(r"(?<=[.;])\s", " ".join(field.description.split()))[0].rstrip(".;")
    if first[1:2].islower():  # a sentence's capital, not a name's (ImageNet)
        first = first[0].lower() + first[1:]
    return f" ({first})"


def schemas() -> dict[str, str]:
    """file name -> the JSON schema text of each file's model, as committed in `schemas/`."""
    texts = {}
    for name, target in SCHEMAS.items():
        module, _, attribute = target.partition(":")
        model = getattr(importlib.import_module(module), attribute)
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": "Written by `python -m common.schema` from " + target + "; do not edit.",
            **model.model_json_schema(),
        }
        _drop_null_defaults(schema)
        texts[name] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return texts


def _drop_null_defaults(schema: Any) -> None:
    """Remove `default: null` where null is not allowed (a key that may be left out, `x: float =
    None`): an editor would offer it."""
    if isinstance(schema, dict):
        if schema.get("default", 0) is None and "anyOf" not in schema:
            del schema["default"]
        for value in schema.values():
            _drop_null_defaults(value)
    elif isinstance(schema, list):
        for value in schema:
            _drop_null_defaults(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the JSON schemas of the YAML files.")
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    for name, text in schemas().items():
        path = SCHEMA_DIR / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                sys.exit(
                    f"error: {path.relative_to(REPO)} is stale (its model changed): "
                    "run `python -m common.schema` and commit it"
                )
        elif not path.is_file() or path.read_text() != text:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
