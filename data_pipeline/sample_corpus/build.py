#!/usr/bin/env python3
"""Rebuild the bundled sample corpus from the Python 3.11 documentation sources.

The sources are the reStructuredText files that Debian's ``python3.11-doc``
package installs under /usr/share/doc/python3.11-doc/html/_sources/ (files
ending in .rst.txt).  Each page is turned into plain English prose: code
blocks, tables, comments and metadata directives are dropped, inline markup is
reduced to its text, and wrapped lines are joined.  Pages are split into
documents at their top-level sections and written as JSON Lines, one object
per document:

    {"text": "...", "source": "library/functions.rst", "section": "library"}

Only the standard library is used, and the output is deterministic: running
the script twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections import Counter, deque
from pathlib import Path

DEFAULT_SRC = Path("/usr/share/doc/python3.11-doc/html/_sources")
DEFAULT_OUT = Path(__file__).resolve().parent / "python_docs.jsonl"
DEFAULT_MAX_BYTES = 4_500_000
MIN_DOC_CHARS = 200
# Sections the selection must never leave out (checked after selecting).
REQUIRED_SECTIONS = ("library", "tutorial", "reference", "howto", "faq")

# --------------------------------------------------------------------------
# Directive tables
# --------------------------------------------------------------------------

# Object descriptions: the argument is a signature that becomes its own line;
# the value is the word Sphinx shows in front of it.
SIGNATURE_DIRECTIVES = {
    "function": "", "method": "", "attribute": "", "data": "", "object": "",
    "describe": "", "opcode": "", "cmdoption": "", "option": "", "envvar": "",
    "pdbcommand": "", "2to3fixer": "",
    "class": "class ", "exception": "exception ",
    "classmethod": "classmethod ", "staticmethod": "static ",
    "abstractmethod": "abstractmethod ",
    "decorator": "@", "decoratormethod": "@",
    "coroutinefunction": "coroutine ", "coroutinemethod": "coroutine ",
    "awaitablefunction": "awaitable ", "awaitablemethod": "awaitable ",
    "c:function": "", "c:member": "", "c:type": "", "c:var": "",
    "c:macro": "", "c:struct": "", "c:data": "",
}

# Admonitions and the like: the body is prose, shown after a label.
LABELLED_DIRECTIVES = {
    "note": "Note:", "warning": "Warning:", "seealso": "See also:",
    "impl-detail": "CPython implementation detail:", "important": "Important:",
    "caution": "Caution:", "attention": "Attention:", "tip": "Tip:",
    "hint": "Hint:", "danger": "Danger:", "error": "Error:",
}

# Containers whose body is plain prose with nothing added in front.
PROSE_DIRECTIVES = {"glossary", "epigraph", "container", "sidebar", "topic",
                    "admonition", "hlist", "centered", "rubric"}

# Everything else (code-block, doctest, testcode, productionlist, index,
# toctree, module, sectionauthor, include, tables, images, audit-event, ...)
# is dropped together with its body.

# --------------------------------------------------------------------------
# Line-level patterns
# --------------------------------------------------------------------------

DIRECTIVE_RE = re.compile(r"^\.\.\s+([\w:.+-]+)::(?:\s+(.*))?$")
LABEL_RE = re.compile(r"^\.\.\s+_([^:]+):\s*(.*)$")
SUBST_DEF_RE = re.compile(r"^\.\.\s+\|([^|]+)\|\s+([\w:-]+)::\s*(.*)$")
FOOTNOTE_DEF_RE = re.compile(r"^\.\.\s+\[[^\]]+\]")
OPTION_LINE_RE = re.compile(r"^:[\w:-]+:(\s|$)")
FIELD_RE = re.compile(r"^:([^:`]+):(?:\s+(.*))?$")
LINE_BLOCK_RE = re.compile(r"^\|(?:\s+(.*))?$")
BULLET_RE = re.compile(r"^([-*+\u2022]|#\.|\d+\.|\(?[a-z0-9#]\))\s+(.*)$")
ADORNMENT_CHARS = set("=-~^\"'*+#<>:_.`")
SIMPLE_TABLE_RE = re.compile(r"^=+( +=+)*$")


def is_adornment(stripped: str, min_len: int = 3) -> bool:
    """A section underline/overline or transition: one punctuation char repeated."""
    return (len(stripped) >= min_len and stripped[0] in ADORNMENT_CHARS
            and stripped == stripped[0] * len(stripped))


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def block_end(lines: list[str], start: int, indent: int) -> int:
    """Index of the first line after `start` that is non-blank and indented
    at most `indent`, i.e. the end of the indented block that follows."""
    i = start + 1
    while i < len(lines) and (not lines[i].strip() or indent_of(lines[i]) > indent):
        i += 1
    return i


def dedent(lines: list[str]) -> list[str]:
    width = min((indent_of(line) for line in lines if line.strip()), default=0)
    return [line[width:] for line in lines]


# --------------------------------------------------------------------------
# Block-level parsing: reST lines -> a flat list of items
# --------------------------------------------------------------------------
# Items are tuples:
#   ("heading", style, raw_text)   section title; style is the adornment
#   ("para", raw_text[, label])    paragraph, inline markup still present; an
#                                  optional label ("Note:") goes in front
#   ("plain", text)                text to keep verbatim (signatures)
#   ("target", name, is_label)     a `.. _name:` target; is_label when it has no
#                                  URL, i.e. it names the next heading for :ref:
#   ("subst", name, raw_text)      a `|name| replace::` definition


class Parser:
    """Turns the lines of one reST block into items.  Directive bodies are
    parsed by a fresh Parser on their dedented lines (recursion)."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.items: list[tuple] = []
        self.para: list[str] = []      # stripped lines of the open paragraph
        self.para_indent = 0
        self.para_is_item = False      # the open paragraph is a list/field item
        self.literal_indent = None     # skip an indented literal block deeper than this

    def parse(self) -> list[tuple]:
        lines, i = self.lines, 0
        while i < len(lines):
            i = self.step(i)
        self.flush()
        return self.items

    def step(self, i: int) -> int:
        """Consume one construct starting at line i; return the next index."""
        lines = self.lines
        line = lines[i]
        stripped = line.strip()
        indent = indent_of(line)

        if self.literal_indent is not None:
            if not stripped or indent > self.literal_indent:
                return i + 1            # inside a `::` literal block
            self.literal_indent = None

        if not stripped:
            self.flush()
            return i + 1

        if SIMPLE_TABLE_RE.match(stripped) and " " in stripped and not self.para:
            return self.skip_simple_table(i)
        # (Short titles such as "os" may have a two-character underline.)
        if is_adornment(stripped) or (len(self.para) == 1 and
                                      is_adornment(stripped, max(2, len(self.para[0])))):
            return self.adornment(i)
        if stripped.startswith(("+-", "+=")) and not self.para:
            return self.skip_paragraph(i)             # grid table
        if stripped == ".." or stripped.startswith(".. "):
            self.flush()
            return self.explicit_markup(i)
        if stripped.startswith(">>>") and not self.para:
            return self.skip_paragraph(i)             # doctest block

        # A list item, field or line-block line starts its own paragraph,
        # unless it is a more indented continuation of the open item.
        item = BULLET_RE.match(stripped) or FIELD_RE.match(stripped) or LINE_BLOCK_RE.match(stripped)
        if item and (not self.para or (self.para_is_item and indent <= self.para_indent)):
            self.flush()
            self.start_item(stripped, indent)
            return i + 1

        if not self.para and self.is_definition_term(i):
            # A definition-list term stands alone; its definition follows.
            self.items.append(("para", stripped))
            return i + 1

        if not self.para:
            self.para_indent = indent
        self.para.append(stripped)
        return i + 1

    # -- paragraphs ---------------------------------------------------------

    def flush(self) -> None:
        """Close the open paragraph, handling a trailing `::` literal marker."""
        if not self.para:
            return
        text = " ".join(self.para)
        if text.endswith("::"):
            # "Example::" -> "Example:", "Example ::" / "::" -> dropped marker.
            text = text[:-2].rstrip() if (text == "::" or text.endswith(" ::")) else text[:-1]
            self.literal_indent = self.para_indent
        if text:
            self.items.append(("para", text))
        self.para = []
        self.para_is_item = False

    def start_item(self, stripped: str, indent: int) -> None:
        bullet = BULLET_RE.match(stripped)
        line_block = LINE_BLOCK_RE.match(stripped)
        if line_block:
            self.para = [line_block.group(1) or ""]
        elif bullet:
            marker = bullet.group(1)
            marker = "-" if marker in ("*", "+", "\u2022", "#.") else marker
            self.para = [f"{marker} {bullet.group(2)}"]
        else:
            field = FIELD_RE.match(stripped)
            name, body = field.group(1), field.group(2) or ""
            self.para = [f"{name}: {body}".rstrip()]
        self.para_indent = indent
        self.para_is_item = True

    def is_definition_term(self, i: int) -> bool:
        nxt = i + 1
        return (nxt < len(self.lines) and self.lines[nxt].strip() != ""
                and indent_of(self.lines[nxt]) > indent_of(self.lines[i])
                and not is_adornment(self.lines[nxt].strip()))

    def skip_paragraph(self, i: int) -> int:
        while i < len(self.lines) and self.lines[i].strip():
            i += 1
        return i

    # -- titles, transitions and simple tables ------------------------------

    def adornment(self, i: int) -> int:
        lines = self.lines
        stripped = lines[i].strip()
        char = stripped[0]
        # Overlined title: adornment / title / same adornment.
        if (not self.para and i + 2 < len(lines) and lines[i + 1].strip()
                and lines[i + 2].strip() == stripped):
            self.items.append(("heading", "over" + char, lines[i + 1].strip()))
            return i + 3
        # Underlined title: a one-line paragraph followed by the adornment.
        if len(self.para) == 1 and not self.para_is_item:
            self.items.append(("heading", "under" + char, self.para[0]))
            self.para = []
            return i + 1
        if self.para:               # stray punctuation line inside a paragraph
            self.para.append(stripped)
            return i + 1
        if SIMPLE_TABLE_RE.match(stripped):
            return self.skip_simple_table(i)
        return i + 1                # transition line

    def skip_simple_table(self, i: int) -> int:
        """Skip a `=== ===` table: it ends at a border line followed by a
        blank line (or the end of the block)."""
        lines = self.lines
        j = i + 1
        while j < len(lines):
            s = lines[j].strip()
            if SIMPLE_TABLE_RE.match(s) and (j + 1 == len(lines) or not lines[j + 1].strip()):
                return j + 1
            j += 1
        return j

    # -- explicit markup: directives, comments, targets ---------------------

    def explicit_markup(self, i: int) -> int:
        lines = self.lines
        stripped = lines[i].strip()
        end = block_end(lines, i, indent_of(lines[i]))
        if stripped == ".." and (i + 1 == len(lines) or not lines[i + 1].strip()):
            return i + 1            # empty comment: does not swallow what follows

        subst = SUBST_DEF_RE.match(stripped)
        if subst:
            if subst.group(2) == "replace":
                self.items.append(("subst", subst.group(1), subst.group(3)))
            return end
        label = LABEL_RE.match(stripped)
        if label:
            is_label = not label.group(2)       # `.. _name: url` is an external link
            self.items.append(("target", label.group(1).strip().lower(), is_label))
            return end
        directive = DIRECTIVE_RE.match(stripped)
        if directive and not FOOTNOTE_DEF_RE.match(stripped):
            name = directive.group(1).lower()
            self.directive(name, directive.group(2) or "", dedent(lines[i + 1:end]))
        # Anything else is a comment or a footnote: dropped with its block.
        return end

    def directive(self, name: str, argument: str, body: list[str]) -> None:
        # The first lines of the body, up to a blank line, hold the options
        # (dropped) and, for some directives, more of the argument.
        head_end = 0
        while head_end < len(body) and body[head_end].strip():
            head_end += 1
        head = [line.strip() for line in body[:head_end] if not OPTION_LINE_RE.match(line.strip())]
        content = body[head_end:]

        if name in SIGNATURE_DIRECTIVES:
            # Extra head lines are further signatures (e.g. two call forms),
            # or the rest of a long one continued with a trailing backslash.
            signatures = "\n".join([argument.strip()] + head)
            for signature in re.sub(r"\\\n", " ", signatures).split("\n"):
                if signature:
                    self.items.append(("plain", SIGNATURE_DIRECTIVES[name] + signature))
            self.items.extend(Parser(content).parse())
            return

        prose = [argument] + head + [""] + content   # argument text is prose too
        if name in ("versionadded", "versionchanged", "deprecated",
                    "deprecated-removed", "availability"):
            label, rest = version_label(name, argument)
            self.labelled(label, [rest] + head + [""] + content)
        elif name in LABELLED_DIRECTIVES:
            self.labelled(LABELLED_DIRECTIVES[name], prose)
        elif name == "rubric":
            if argument.strip().lower() != "footnotes":   # footnotes are dropped
                self.items.append(("para", argument.strip()))
        elif name in PROSE_DIRECTIVES or (name == "only" and "html" in argument):
            self.items.extend(Parser(prose).parse())

    def labelled(self, label: str, prose: list[str]) -> None:
        """Parse `prose` and put `label` in front of its first paragraph."""
        items = Parser(prose).parse()
        if items and items[0][0] == "para" and not BULLET_RE.match(items[0][1]):
            items[0] = ("para", items[0][1], label)
        else:
            items.insert(0, ("para", "", label))
        self.items.extend(items)


def version_label(name: str, argument: str) -> tuple[str, str]:
    """The label Sphinx prints for version directives, and the remaining
    argument text (which is prose, e.g. `.. versionchanged:: 3.3 Added x.`)."""
    words = argument.split() + ["", ""]
    if name == "availability":
        return "Availability:", argument
    if name == "deprecated-removed":
        return (f"Deprecated since version {words[0]}, will be removed in version {words[1]}:",
                " ".join(words[2:]))
    prefix = {"versionadded": "New in version", "versionchanged": "Changed in version",
              "deprecated": "Deprecated since version"}[name]
    return f"{prefix} {words[0]}:", " ".join(words[1:])


# --------------------------------------------------------------------------
# Inline markup -> plain text
# --------------------------------------------------------------------------

LITERAL_RE = re.compile(r"``(.+?)``(?!`)")
ROLE_RE = re.compile(r":((?:[\w.-]+:)?[\w.-]+):`((?:[^`\\]|\\.)+)`_{0,2}")
TITLED_TARGET_RE = re.compile(r"^(.*?)\s*<([^<>]+)>$", re.S)
ESCAPE_RE = re.compile(r"\\(.)", re.S)
LINK_RE = re.compile(r"`([^`]*?)\s*<([^`>]*)>`_{1,2}")
INTERPRETED_RE = re.compile(r"`([^`]+)`_{0,2}")
FOOTNOTE_REF_RE = re.compile(r"\s*\[(?:#[\w-]*|\d+|\*|[A-Za-z][\w-]*)\]_")
SUBST_REF_RE = re.compile(r"\|([^|\s][^|]*)\|_{0,2}")
# reST recognises inline markup only between whitespace/punctuation.
# (An escaped space, "\\ ", also counts as a separator: ":class:`int`\\ s".)
_START = r"(?<![^\s'\"(\[{<\-/:\ue001\ue002])"
_END = r"(?=[\s'\")\]}>\-/:.,;!?\ue000\ue002]|$)"
STRONG_RE = re.compile(_START + r"\*\*([^\s*](?:[^*]*?[^\s*])?)\*\*" + _END)
EMPHASIS_RE = re.compile(_START + r"\*([^\s*](?:[^*]*?[^\s*])?)\*" + _END)
SIMPLE_REF_RE = re.compile(r"(?<![\w.\ue001])([A-Za-z0-9][\w.+-]*?)__?(?![\w\ue000])")
ESCAPED_SPACE = "\ue002"
PLACEHOLDER_RE = re.compile("\ue000(\\d+)\ue001")


class InlineRenderer:
    """Reduces inline reST markup to its text.  `labels` maps :ref: label
    names to section titles, `docs` maps page paths to page titles."""

    def __init__(self, labels: dict[str, str], docs: dict[str, str]):
        self.labels = labels
        self.docs = docs

    def render(self, text: str, page: str = "", substitutions: dict[str, str] | None = None,
               targets: frozenset[str] = frozenset()) -> str:
        """Plain text of `text`, a paragraph of page `page`, whose substitution
        definitions and hyperlink target names are given."""
        substitutions = substitutions or {}
        saved: list[str] = []

        def protect(value: str) -> str:
            # Finished text is parked behind a placeholder so that later
            # patterns (emphasis, escapes) cannot touch it.
            saved.append(value)
            return f"\ue000{len(saved) - 1}\ue001"

        text = LITERAL_RE.sub(lambda m: protect(m.group(1)), text)
        text = ROLE_RE.sub(lambda m: protect(self.role(m.group(1), m.group(2), page)), text)
        text = text.replace("\\ ", ESCAPED_SPACE)
        text = ESCAPE_RE.sub(lambda m: protect(m.group(1)), text)
        text = text.replace(" --- ", " \u2014 ")             # Sphinx shows --- as an em dash
        text = LINK_RE.sub(lambda m: m.group(1) or m.group(2), text)
        text = INTERPRETED_RE.sub(lambda m: m.group(1), text)
        text = FOOTNOTE_REF_RE.sub("", text)
        text = SUBST_REF_RE.sub(lambda m: substitutions.get(m.group(1), m.group(0)), text)
        text = STRONG_RE.sub(lambda m: m.group(1), text)
        text = EMPHASIS_RE.sub(lambda m: m.group(1), text)
        # `name_` is a reference only if the page defines target `name`; else
        # it is just an identifier such as mangle_from_.
        text = SIMPLE_REF_RE.sub(
            lambda m: m.group(1) if m.group(1).lower() in targets else m.group(0), text)
        text = text.replace(ESCAPED_SPACE, "")          # "\ " joins words
        text = PLACEHOLDER_RE.sub(lambda m: saved[int(m.group(1))], text)
        return re.sub(r"\s+", " ", text).strip()

    def role(self, name: str, content: str, page: str) -> str:
        name = name.split(":")[-1]                      # c:func -> func, py:class -> class
        content = content.replace("\n", " ")
        titled = TITLED_TARGET_RE.match(content)
        if titled and titled.group(1) and name not in ("abbr", "samp", "kbd", "code"):
            return ESCAPE_RE.sub(r"\1", titled.group(1))
        target = ESCAPE_RE.sub(r"\1", titled.group(2) if titled else content).strip()
        if name == "ref":
            return self.labels.get(target.lower(), target.replace("-", " ").replace("_", " "))
        if name == "doc":
            path = resolve_doc(page, target)
            return self.docs.get(path, path.rsplit("/", 1)[-1])
        if name == "pep":
            return "PEP " + target.split("#")[0]
        if name == "rfc":
            return "RFC " + target.split("#")[0]
        if name == "issue":
            return "bpo-" + target
        if name == "gh":
            return "gh-" + target
        if name in ("samp", "file"):
            return re.sub(r"(?<!\\)[{}]", "", content).replace("\\{", "{").replace("\\}", "}")
        if name == "menuselection":
            return target.replace("-->", ">")
        if name == "guilabel":
            return target.replace("&", "")
        target = target.lstrip("!")
        if target.startswith("~"):                      # ~pkg.mod.Name shows only Name
            target = target[1:].rsplit(".", 1)[-1]
        return target.lstrip(".")                       # .name: a relative lookup


def resolve_doc(page: str, target: str) -> str:
    """The page path a :doc: target points at (relative to the current page)."""
    if target.startswith("/"):
        return target.lstrip("/")
    parts = page.split("/")[:-1]
    for part in target.split("/"):
        if part == "..":
            parts = parts[:-1]
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


# --------------------------------------------------------------------------
# Pages -> documents
# --------------------------------------------------------------------------


class Page:
    """One parsed source page."""

    def __init__(self, path: str, items: list[tuple]):
        self.path = path                                # e.g. "library/functions.rst"
        self.section = path.split("/")[0] if "/" in path else "root"
        self.items = items
        self.substitutions = {"version": "3.11", "release": "3.11", "nbsp": " "}
        self.substitutions.update({i[1]: i[2] for i in items if i[0] == "subst"})

    def titles(self) -> tuple[str | None, dict[str, str]]:
        """The page title and {label: title of the heading it precedes}."""
        page_title, labels, pending = None, {}, []
        for item in self.items:
            if item[0] == "target" and item[2]:
                pending.append(item[1])
            elif item[0] == "heading":
                page_title = page_title or item[2]
                labels.update({label: item[2] for label in pending})
                pending = []
            elif item[0] in ("para", "plain"):
                pending = []
        return page_title, labels

    def documents(self, renderer: InlineRenderer) -> list[str]:
        """Split at headings of the two outermost levels (page title and
        top-level sections); drop documents that are too short."""
        # Substitution texts carry markup too (``dict()``).
        subs = {k: renderer.render(v, self.path) for k, v in self.substitutions.items()}
        targets = frozenset(item[1] for item in self.items if item[0] == "target")
        levels: list[str] = []                          # adornment styles, outermost first
        chunks: list[list[str]] = [[]]
        for item in self.items:
            kind = item[0]
            if kind == "heading":
                if item[1] not in levels:
                    levels.append(item[1])
                if levels.index(item[1]) <= 1 and chunks[-1]:
                    chunks.append([])
                text = renderer.render(item[2], self.path, subs, targets)
            elif kind == "para":
                text = renderer.render(item[1], self.path, subs, targets)
                if len(item) > 2:                       # labelled: "Note: ...", "New in version 3.6."
                    text = f"{item[2]} {text}" if text else item[2].rstrip(":") + "."
            elif kind == "plain":
                text = " ".join(item[1].split())
            else:
                continue
            if text:
                chunks[-1].append(text)
        docs = ["\n\n".join(chunk) for chunk in chunks]
        return [doc for doc in docs if len(doc) >= MIN_DOC_CHARS]


def read_pages(src: Path) -> list[Page]:
    pages = []
    for file in sorted(src.rglob("*.rst.txt"), key=lambda p: p.relative_to(src).as_posix()):
        lines = file.read_text(encoding="utf-8").expandtabs(8).splitlines()
        path = file.relative_to(src).as_posix()[: -len(".txt")]
        pages.append(Page(path, Parser([line.rstrip() for line in lines]).parse()))
    return pages


def build_renderer(pages: list[Page]) -> InlineRenderer:
    labels, docs = {}, {}
    for page in pages:
        title, page_labels = page.titles()
        labels.update(page_labels)
        if title:
            docs[page.path[: -len(".rst")]] = title
    # Titles contain markup themselves (":keyword:`!if` Statements").
    plain = InlineRenderer({}, {})
    labels = {k: plain.render(v) for k, v in labels.items()}
    docs = {k: plain.render(v) for k, v in docs.items()}
    return InlineRenderer(labels, docs)


# --------------------------------------------------------------------------
# Selection under the size cap
# --------------------------------------------------------------------------


def to_lines(page: Page, docs: list[str]) -> list[bytes]:
    return [(json.dumps({"text": d, "source": page.path, "section": page.section},
                        ensure_ascii=False) + "\n").encode("utf-8") for d in docs]


def select(pages: list[tuple[Page, list[bytes]]], max_bytes: int) -> list[tuple[Page, list[bytes]]]:
    """Take whole pages round-robin over sections (in sorted order) so that
    every section is represented; a page that does not fit in what is left of
    the budget is skipped.  Within a section pages are taken in the order of
    a hash of their path, so that a partly taken section (library) is a
    spread over the alphabet rather than its first letters."""
    queues: dict[str, deque] = {}
    for page, lines in sorted(pages, key=lambda pl: hashlib.sha256(pl[0].path.encode()).digest()):
        if lines:
            queues.setdefault(page.section, deque()).append((page, lines))
    chosen, used = [], 0
    while queues:
        for section in sorted(queues):
            page, lines = queues[section].popleft()
            size = sum(len(line) for line in lines)
            if used + size <= max_bytes:
                chosen.append((page, lines))
                used += size
            if not queues[section]:
                del queues[section]
    # Write in source order so the file reads page by page.
    return sorted(chosen, key=lambda pl: pl[0].path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rebuild the sample corpus (JSON Lines of plain-prose documents) from the "
                    "reST sources of the Python 3.11 documentation, as installed by Debian's "
                    "python3.11-doc package.")
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC,
                        help="directory of .rst.txt sources (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output .jsonl file (default: %(default)s)")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help="size cap of the output in bytes (default: %(default)s)")
    args = parser.parse_args(argv)

    if not args.src.is_dir():
        parser.error(f"{args.src} does not exist; install Debian's python3.11-doc package "
                     f"(apt-get install python3.11-doc) or pass --src")
    started = time.monotonic()
    pages = read_pages(args.src)
    renderer = build_renderer(pages)
    chosen = select([(p, to_lines(p, p.documents(renderer))) for p in pages], args.max_bytes)

    data = b"".join(line for _, lines in chosen for line in lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)

    docs_per_section = Counter()
    pages_per_section = Counter()
    for page, lines in chosen:
        docs_per_section[page.section] += len(lines)
        pages_per_section[page.section] += 1
    print(f"wrote {args.out}: {sum(docs_per_section.values())} documents from "
          f"{len(chosen)} of {len(pages)} pages, {len(data)} bytes, "
          f"{time.monotonic() - started:.1f}s", file=sys.stderr)
    for section in sorted(docs_per_section):
        print(f"  {section:<12} {docs_per_section[section]:>5} documents "
              f"{pages_per_section[section]:>4} pages", file=sys.stderr)
    missing = [s for s in REQUIRED_SECTIONS if s not in docs_per_section]
    if missing:
        print(f"warning: no documents from {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
