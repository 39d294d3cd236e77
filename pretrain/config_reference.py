"""The config reference, read from the config dataclasses themselves: every key's type, default and meaning.

A field's meaning is its trailing `# comment`, or else the comment lines directly above it. `graft config keys`
prints the reference and `graft config keys --markdown` writes docs/config.md, which a test compares with the code.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import textwrap
import tokenize
import typing
from dataclasses import dataclass

from pretrain.config import RunConfig

REGENERATE = "graft config keys --markdown > docs/config.md"


@dataclass(frozen=True)
class ConfigKey:
    name: str  # dotted, e.g. train.max_steps
    type: str
    default: str  # as YAML would spell it; "required" for keys without a default
    meaning: str


def config_keys(prefix: str = "", root: type = RunConfig) -> list[ConfigKey]:
    """Every leaf key of the run config (in declaration order) whose dotted name starts with `prefix`."""
    return [key for key in _walk(root, "") if key.name.startswith(prefix)]


def _walk(cls: type, path: str) -> list[ConfigKey]:
    hints = typing.get_type_hints(cls)
    meanings = field_comments(cls)
    keys = []
    for f in dataclasses.fields(cls):
        name = f"{path}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _walk(hints[f.name], f"{name}.")
        else:
            keys.append(ConfigKey(name, _type_name(f.type), _default(f), meanings.get(f.name, "")))
    return keys


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its trailing comment, or the block of comment lines directly above it."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        trailing = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        above, n = [], node.lineno - 1
        while n >= 1 and lines[n - 1].strip().startswith("#"):
            above.insert(0, comments[n])
            n -= 1
        found[node.target.id] = " ".join(trailing or above)
    return found


def _type_name(annotation) -> str:
    if isinstance(annotation, str):  # modules with `from __future__ import annotations`
        return annotation
    return annotation.__name__ if isinstance(annotation, type) else repr(annotation).replace("typing.", "")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value == "???":  # OmegaConf's mark for a value that must be given
        return "required"
    return value if isinstance(value, str) else json.dumps(value)


def keys_text(keys: list[ConfigKey]) -> str:
    """One key a line, aligned: name, type, default, meaning."""
    if not keys:
        return ""
    widths = [max(len(getattr(k, attr)) for k in keys) for attr in ("name", "type", "default")]
    return "\n".join(f"{k.name:<{widths[0]}}  {k.type:<{widths[1]}}  {k.default:<{widths[2]}}  {k.meaning}".rstrip()
                     for k in keys) + "\n"


def keys_markdown(keys: list[ConfigKey]) -> str:
    """docs/config.md: one table per top-level section."""
    out = ["# Config reference", "",
           "Every key of a run config, with its type, default and meaning, read from the config dataclasses' "
           "field comments.",
           "Set keys in a YAML preset (`configs/`) or as `KEY=VALUE` overrides on the command line.",
           "`graft config show CONFIG [KEY=VALUE ...]` prints the resolved config without starting anything;",
           "`graft config keys [PREFIX]` prints this table in the terminal.", "",
           f"Generated from the code, not edited by hand: after changing a config field, run `{REGENERATE}`.",
           "`tests/test_config_reference.py` fails while this file and the code disagree.", ""]
    sections: dict[str, list[ConfigKey]] = {}
    for key in keys:
        sections.setdefault(key.name.split(".")[0] if "." in key.name else "", []).append(key)
    for section, members in sections.items():
        out += [f"## `{section}`" if section else "## Top level", "", "| key | type | default | meaning |",
                "| --- | --- | --- | --- |"]
        out += [f"| `{k.name}` | `{k.type}` | `{k.default}` | {_cell(k.meaning)} |" for k in members]
        out.append("")
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
