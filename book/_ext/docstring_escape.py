"""Sphinx extension: render the library's plain-text docstrings as reStructuredText.

The docstrings of ``shapcam_widgets`` are written for ``help()``, not for Sphinx:

- parameters as ``name: description`` lines with indented continuation lines;
- numpy-style ``Parameters`` headings underlined with dashes;
- formulas such as ``|S|!(n-|S|-1)!`` whose bars reStructuredText reads as
  substitution references.

Before autodoc renders a docstring, this turns the parameter lines into a bullet list,
the headings into bold paragraphs and escapes the bars. The text itself is unchanged.
"""

import re

_BAR = re.compile(r"(?<!\\)\|")
_ITEM = re.compile(r"^([A-Za-z_][\w]*(?:, [A-Za-z_][\w]*)*): (\S.*)$")
_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def convert(lines: list[str]) -> list[str]:
    """The docstring ``lines`` rewritten as reStructuredText (see the module docstring)."""
    out: list[str] = []
    in_item = False
    item_indent = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if "|" in line and "``" not in line:
            line = _BAR.sub(r"\\|", line)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and _UNDERLINE.match(nxt):  # numpy-style section heading
            out += ["", f"**{line.strip()}**", ""]
            in_item = False
            i += 2
            continue
        match = _ITEM.match(line.strip())
        if match and not (in_item and _indent(line) > item_indent):
            if not in_item and out and out[-1].strip():
                out.append("")
            out.append(f"{' ' * _indent(line)}- ``{match[1]}``: {match[2]}")
            in_item, item_indent = True, _indent(line)
        elif in_item and line.strip() and _indent(line) > item_indent:
            out.append(" " * (item_indent + 2) + line.strip())  # continuation of the item
        else:
            if in_item and line.strip():
                out.append("")
            in_item = False if line.strip() or not in_item else in_item
            out.append(line)
        i += 1
    return out


def _process(app, what, name, obj, options, lines):
    lines[:] = convert(lines)


def setup(app):
    app.connect("autodoc-process-docstring", _process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
