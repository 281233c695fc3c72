"""C-FIND response identifiers written straight from DICOM JSON equal pydicom's encoding."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode

from dicomhub.dimse.query import encode_result, parse_identifier, result_identifier

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"

ITEM: dict[str, Any] = {
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen", "Ideographic": "ミュラー"}]},
    "00100020": {"vr": "LO", "Value": ["PAT-1"]},
    "00080020": {"vr": "DA", "Value": ["20240131"]},
    "00080030": {"vr": "TM", "Value": ["101500.25"]},
    "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.8.498.1"]},
    "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
    "00201208": {"vr": "IS", "Value": [42]},
    "00101030": {"vr": "DS", "Value": [72.5]},
    "00101020": {"vr": "DS", "Value": [0.1 + 0.2]},
    "00280010": {"vr": "US", "Value": [512]},
    "00081030": {"vr": "LO"},
    "00081032": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["X1"]}}]},
}


def _request(keys: list[str], charset: bool = False, retrieve_ae: bool = False) -> Any:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for key in keys:
        identifier.add_new(int(key, 16), ITEM[key]["vr"], None)
    if charset:
        identifier.SpecificCharacterSet = ""
    if retrieve_ae:
        identifier.RetrieveAETitle = ""
    return parse_identifier(identifier, STUDY_ROOT_FIND, 100)


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize(
    "keys",
    [
        [k for k in ITEM if k != "00081032"],  # every simple VR, non-ASCII names
        ["0020000D", "00100020", "00080020"],  # ASCII only: no Specific Character Set
        ["0020000D", "00081032"],  # a sequence with items: pydicom's encoder
    ],
    ids=["all-vrs", "ascii", "sequence"],
)
def test_direct_encoding_equals_pydicom(keys: list[str], implicit: bool) -> None:
    for charset, retrieve_ae in [(False, False), (True, True)]:
        request = _request(keys, charset, retrieve_ae)
        raw = encode_result(ITEM, request, "DICOMHUB", implicit=implicit)
        got = decode(BytesIO(raw), implicit, True)
        want = result_identifier(ITEM, request, "DICOMHUB")
        assert [e.tag for e in got] == [e.tag for e in want]
        for elem in want:
            assert got[elem.tag].VR == elem.VR, elem.tag
            if elem.VR == "DS" and elem.value is not None:
                # pydicom would write 0.1 + 0.2 as 19 characters; DS allows 16 (PS3.5 §6.2)
                assert len(str(got[elem.tag].value)) <= 16
                assert float(got[elem.tag].value) == pytest.approx(float(elem.value), rel=1e-12)
            else:
                assert got[elem.tag].value == elem.value, elem.tag
