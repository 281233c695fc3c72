"""The shared sample set and how each file must be treated, judged independently with pydicom."""

from __future__ import annotations

import json
import re
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "dicom-samples"
if not (SAMPLES / "manifest.json").is_file():
    raise RuntimeError(f"the shared sample set is missing at {SAMPLES}")

MANIFEST: list[dict[str, Any]] = json.loads((SAMPLES / "manifest.json").read_text())["files"]

# pydicom's own test files that are cut short on purpose.
TRUNCATED = {
    "files/pydicom-wheel/test_files/MR_truncated.dcm",
    "files/pydicom-wheel/test_files/rtplan_truncated.dcm",
    "files/pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm",
}

# Four instances of one study (…0.133): series …0.134 (1 instance) and …0.136 (3 instances).
STUDY_133 = [
    "files/pydicom-wheel/test_files/dicomdirtests/98892003/MR1/4919",
    "files/pydicom-wheel/test_files/dicomdirtests/98892003/MR2/4950",
    "files/pydicom-wheel/test_files/dicomdirtests/98892003/MR2/4981",
    "files/pydicom-wheel/test_files/dicomdirtests/98892003/MR2/5011",
]
CT_SMALL = "files/pydicom-wheel/test_files/CT_small.dcm"  # 39 KB, another study

UID_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def is_part10(entry: dict[str, Any]) -> bool:
    """A file with preamble, DICM and File Meta, not a DICOMDIR and not broken on purpose."""
    props = entry["properties"]
    return bool(
        props.get("has_preamble_DICM")
        and props.get("has_file_meta")
        and not props.get("is_dicomdir")
        and not entry["file"].startswith("files/derived/")
    )


@cache
def pydicom_full(path: str) -> Dataset:
    """The whole file read by pydicom (warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def rule_violation(entry: dict[str, Any]) -> str | None:
    """Why a Part-10 sample must still be rejected (truncated, missing or invalid UIDs)."""
    if entry["file"] in TRUNCATED:
        return "truncated"
    ds = pydicom_full(str(SAMPLES / entry["file"]))
    for kw in UID_KEYWORDS:
        value = str(ds.get(kw, "") or "").strip("\x00 ")
        if not value or not _UID.fullmatch(value) or len(value) > 64:
            return f"{kw} missing/invalid"
    return None


def is_storable(entry: dict[str, Any]) -> bool:
    """A valid DICOM instance: a Part-10 file that breaks none of the rules we enforce."""
    return is_part10(entry) and rule_violation(entry) is None
