"""``results/REPORT.md``: one line per item beside the thesis's number.

The report opens with how it was made (mode, machine, date, wall time),
then one table row per figure or table — facejax's number, the thesis's,
and whether the shape agrees (and why not) — then a section per item with
its PNG, its CSV and, for tables, the table itself.
"""

import dataclasses
import os
from typing import Any, Sequence

from facejax.report import output

NOT_YET = "not yet"


@dataclasses.dataclass
class Line:
  """One item of the report (a figure or a table of the thesis).

  Attributes:
    key: file stem in ``results/`` and anchor, e.g. ``fig_3_2``.
    title: what the thesis's item shows, e.g. ``Fig. 3.2 test top-1 …``.
    facejax: facejax's number(s), one short phrase.
    thesis: the thesis's number(s), one short phrase.
    agreement: does the shape agree; where the data differs and why.
    files: paths relative to ``results/`` (PNG first, then CSVs).
    table: a Markdown table shown in the item's section, or "".
    status: "ok", or ``NOT_YET`` with the reason in ``agreement``.
  """
  key: str
  title: str
  facejax: str
  thesis: str
  agreement: str
  files: list[str] = dataclasses.field(default_factory=list)
  table: str = ""
  status: str = "ok"


def not_yet(key: str, title: str, thesis: str, reason: str) -> Line:
  """A line for an item that could not be made (yet), saying why."""
  return Line(key, title, NOT_YET, thesis, reason, status=NOT_YET)


def _escape(text: Any) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub Markdown table."""
  lines = ["| " + " | ".join(_escape(h) for h in header) + " |",
           "| " + " | ".join("---" for _ in header) + " |"]
  for row in rows:
    lines.append("| " + " | ".join(_escape(c) for c in row) + " |")
  return "\n".join(lines)


def _section(line: Line) -> str:
  parts = [f"## {line.title}", ""]
  if line.status != "ok":
    parts += [f"**{line.status}**: {line.agreement}", ""]
    return "\n".join(parts)
  parts += [f"facejax: {line.facejax}  ", f"thesis: {line.thesis}  ",
            f"agreement: {line.agreement}", ""]
  images = [f for f in line.files if f.endswith(".png")]
  others = [f for f in line.files if not f.endswith(".png")]
  parts += [f"![{line.key}]({f})" for f in images]
  if images:
    parts.append("")
  if line.table:
    parts += [line.table, ""]
  if others:
    parts += ["files: " + ", ".join(f"[{f}]({f})" for f in others), ""]
  return "\n".join(parts)


def render(lines: Sequence[Line], header: str) -> str:
  """The whole REPORT.md text."""
  summary = table(
      ("item", "facejax", "thesis", "shape agreement / why it differs"),
      [(f"[{line.title}](#{_anchor(line.title)})", line.facejax, line.thesis,
        line.agreement) for line in lines])
  body = [header.rstrip(), "", summary, ""]
  body += [_section(line) for line in lines]
  return "\n".join(body).rstrip() + "\n"


def _anchor(title: str) -> str:
  """GitHub's heading anchor: lower case, spaces to '-', most punctuation
  dropped."""
  kept = "".join(c for c in title.lower()
                 if c.isalnum() or c in " -_")
  return kept.replace(" ", "-")


def write(path: str, lines: Sequence[Line], header: str) -> str:
  """Writes REPORT.md atomically; returns its path."""
  for line in lines:
    for name in line.files:
      if not os.path.exists(os.path.join(os.path.dirname(path), name)):
        raise FileNotFoundError(f"{path}: {line.key} names {name}, which "
                                "was not written")
  return output.write_text(path, render(lines, header))
