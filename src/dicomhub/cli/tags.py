"""``dicomhub tags``: a DICOM file as a readable table, or as DICOM JSON (PS3.18 §F.2).

One line per element: tag ``(gggg,eeee)``, name, VR and value; sequence items are indented under
their sequence, private elements are named after their Private Creator (PS3.5 §7.8.1), long
values are shortened. ``--json`` prints the DICOM JSON model instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from dicomhub.imaging.source import read_dataset

MAX_VALUE = 64
INDENT = "  "


def add_parser(sub: Any) -> None:
    """Register the ``tags`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "tags",
        help="print the elements of a DICOM file",
        description="Print every element of a DICOM file (File Meta, data set, nested "
        "sequences) as a table, or as DICOM JSON with --json.",
    )
    p.add_argument("file", help="DICOM file")
    p.add_argument("--json", action="store_true", help="DICOM JSON (PS3.18 §F.2)")
    p.add_argument(
        "--width", type=int, default=MAX_VALUE, help=f"longest value shown (default {MAX_VALUE})"
    )
    p.set_defaults(func=run)


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = text.replace("\r", " ").replace("\n", " ")
    return flat if len(flat) <= width else flat[: max(width - 1, 1)] + "…"


def _value(elem: Any, width: int) -> str:
    value = elem.value
    if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") or isinstance(value, bytes):
        size = len(value) if value is not None and hasattr(value, "__len__") else 0
        return f"<{size} bytes>"
    if value is None or value == "":
        return ""
    if type(value).__name__ == "MultiValue":
        return shorten("\\".join(str(v) for v in value), width)
    return shorten(str(value), width)


def _name(ds: Any, elem: Any) -> str:
    if not elem.tag.is_private:
        return str(elem.name)
    if elem.tag.is_private_creator:
        return "Private Creator"
    creator = ""
    try:
        block = ds.get((elem.tag.group, elem.tag.element >> 8))
        creator = str(block.value) if block is not None else ""
    except (KeyError, TypeError):
        creator = ""
    name = str(elem.name)
    if name.startswith("[") or not creator:
        return f"{name} ({creator})" if creator and creator not in name else name
    return f"Private ({creator})"


def table_lines(ds: Any, width: int = MAX_VALUE, depth: int = 0) -> list[str]:
    """The table rows of ``ds`` and its sequences, items indented one level per depth."""
    lines: list[str] = []
    pad = INDENT * depth
    for elem in ds:
        tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
        name = _name(ds, elem)
        if elem.VR == "SQ":
            items = elem.value or []
            lines.append(f"{pad}{tag}  {name:<40}  SQ  <{len(items)} item(s)>")
            for i, item in enumerate(items, start=1):
                lines.append(f"{pad}{INDENT}> item {i}")
                lines.extend(table_lines(item, width, depth + 2))
            continue
        lines.append(f"{pad}{tag}  {name:<40}  {elem.VR:<2}  {_value(elem, width)}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the file's elements; exit 1 when it cannot be read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = read_dataset(args.file)
        except (OSError, ValueError) as exc:
            print(f"dicomhub tags: cannot read {args.file}: {exc}", file=sys.stderr)
            return 1
        if args.json:
            doc = ds.to_json_dict(bulk_data_threshold=1 << 30)
            print(json.dumps(doc, indent=1))
            return 0
        meta = getattr(ds, "file_meta", None)
        lines = ["# File Meta Information"] if meta else []
        if meta:
            lines += table_lines(meta, args.width)
            lines.append("# Data Set")
        lines += table_lines(ds, args.width)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
