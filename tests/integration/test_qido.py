"""QIDO-RS end to end (PS3.18 §10.6): ingest real files, query over HTTP, exact result sets."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dicomhub.domain.query import Level
from dicomhub.services.search import search
from dicomhub.web.dicomweb.qido_params import parse_query
from tests.backends.postgres import Cluster
from tests.backends.seaweed import s3_settings_overrides
from tests.integration.qido_fixtures import (
    CT,
    MR,
    SR,
    Corpus,
    build_corpus,
    series_uid,
    sop_uid,
    study_uid,
)

BASE = "/dicomweb"
TRUNCATED = (
    '299 testserver: "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory, backend: str, request: pytest.FixtureRequest
) -> Iterator[Corpus]:
    cluster: Cluster | None = None if backend == "sqlite" else request.getfixturevalue("pg_cluster")
    index = cluster.create_database() if cluster is not None else None
    overrides: dict[str, Any] = {"index": index}
    if backend == "pg+s3":
        s3 = request.getfixturevalue("seaweed_s3")
        overrides.update(s3_settings_overrides(s3, f"qido-{secrets.token_hex(6)}"))
    c = build_corpus(tmp_path_factory.mktemp("qido"), **overrides)
    yield c
    c.archive.close()
    if cluster is not None and index is not None:
        cluster.drop_database(index)


def get(corpus: Corpus, path: str, params: Any = None, **headers: str) -> httpx.Response:
    response: httpx.Response = corpus.client.get(BASE + path, params=params, headers=headers)
    return response


def items(response: httpx.Response) -> list[dict[str, Any]]:
    if response.status_code == 204:
        assert response.content == b""
        return []
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    data = response.json()
    assert isinstance(data, list)
    return data


def first(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def studies(corpus: Corpus, params: Any = None) -> list[int]:
    """Study numbers (last UID component) of ``GET /studies``, in response order."""
    out = []
    for item in items(get(corpus, "/studies", params)):
        out.append(int(first(item, STUDY_UID).rsplit(".", 1)[1]))
    return out


def series_of(corpus: Corpus, path: str, params: Any = None) -> list[str]:
    return [first(i, SERIES_UID) for i in items(get(corpus, path, params))]


def sops(corpus: Corpus, path: str, params: Any = None) -> list[str]:
    return [first(i, SOP_UID) for i in items(get(corpus, path, params))]


# ---------------------------------------------------------------------------------------------
# study level


def test_all_studies_ordered_by_date_desc_nulls_last(corpus: Corpus) -> None:
    assert studies(corpus) == [2, 1, 3, 5, 6, 4]


def test_study_required_attributes_and_counts(corpus: Corpus) -> None:
    (item,) = items(get(corpus, "/studies", {"StudyInstanceUID": study_uid(1)}))
    assert set(item) == {
        "00080020",
        "00080030",
        "00080050",
        "00080056",
        "00080061",
        "00080090",
        "00081190",
        "00100010",
        "00100020",
        "00100030",
        "00100040",
        "0020000D",
        "00200010",
        "00201206",
        "00201208",
    }
    assert item["00080061"] == {"vr": "CS", "Value": ["CT", "SR"]}
    assert item["00201206"] == {"vr": "IS", "Value": [2]}
    assert item["00201208"] == {"vr": "IS", "Value": [4]}  # tenant 2's copy not counted
    assert item["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert item["00081190"] == {
        "vr": "UR",
        "Value": [f"http://testserver/dicomweb/studies/{study_uid(1)}"],
    }
    assert item["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert item["00100030"] == {"vr": "DA"}  # empty value, PS3.18 F.2
    assert list(item) == sorted(item)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # single value: exact and case-sensitive (PS3.4 C.2.2.2.1)
        ({"PatientName": "Doe^John"}, [1]),
        ({"PatientName": "doe^john"}, []),
        ({"PatientID": "P2"}, [2]),
        ({"00100020": "P2"}, [2]),  # tag instead of keyword
        ({"AccessionNumber": "ACC1"}, [1]),
        ({"StudyID": "S3"}, [3]),
        ({"00200010": "S3"}, [3]),
        ({"ReferringPhysicianName": "House^Gregory"}, [1]),
        ({"StudyDescription": "CT chest"}, [1]),
        ({"PatientSex": "M"}, [1]),
        ({"PatientBirthDate": "19800229"}, [2]),
        # single value never matches an empty/absent attribute
        ({"ReferringPhysicianName": "House"}, []),
        ({"StudyDate": "20250101"}, []),
        # wildcards (C.2.2.2.4), case-sensitive
        ({"PatientName": "Doe*"}, [1]),
        ({"PatientName": "DOE*"}, [4]),
        ({"PatientName": "?oe^John"}, [1]),
        ({"PatientName": "*^J*"}, [1, 4]),
        ({"AccessionNumber": "ACC?"}, [1]),
        ({"AccessionNumber": "ACC*2"}, [2, 3, 4]),
        # % and _ are literals, not SQL wildcards
        ({"PatientID": "P%3"}, [3]),
        ({"PatientID": "P%"}, []),
        ({"PatientID": "P%*"}, [3]),
        ({"PatientID": "P?3"}, [3, 6]),
        ({"AccessionNumber": "ACC_2"}, [2]),
        ({"AccessionNumber": "ACC_*"}, [2]),
        ({"PatientName": "Lee_Ann*"}, [5]),
        ({"PatientName": "Lee?Ann*"}, [5, 6]),
        ({"PatientName": "*50%"}, [5]),
        ({"PatientName": "*0%"}, [5]),
        ({"PatientName": "*%"}, [5]),
        # universal: zero length or only '*'
        ({"PatientName": ""}, [2, 1, 3, 5, 6, 4]),
        ({"AccessionNumber": "*"}, [2, 1, 3, 5, 6, 4]),
        # date ranges (C.2.2.2.5), NULL dates never match a range
        ({"StudyDate": "20200115"}, [1]),
        ({"StudyDate": "20200101-20201231"}, [1]),
        ({"StudyDate": "-20200115"}, [1, 3, 5, 6]),
        ({"StudyDate": "20200116-"}, [2]),
        ({"StudyDate": "20191231-20200115"}, [1, 3]),
        ({"PatientBirthDate": "1980-"}, None),  # malformed -> 400 below
        # time ranges with HH, HHMM, HHMMSS.FFFFFF precision on both sides
        ({"StudyTime": "1000-1100"}, [1]),
        ({"StudyTime": "-0800"}, [2]),
        ({"StudyTime": "08-08"}, [2]),
        ({"StudyTime": "2300-"}, [3]),
        ({"StudyTime": "10"}, [1]),
        ({"StudyTime": "1015"}, [1]),
        ({"StudyTime": "101530"}, [1]),
        ({"StudyTime": "101530.25"}, [1]),
        ({"StudyTime": "101530.3"}, []),
        ({"StudyTime": "1016"}, []),
        ({"StudyTime": "101531-"}, [3, 5, 6]),
        ({"StudyTime": "-101530.2"}, [2, 1]),  # .2 spans .200000 to .299999
        ({"StudyTime": "-101530.1"}, [2]),
        ({"StudyTime": "120000-120000"}, [5, 6]),
        # UID lists (C.2.2.2.2), comma or backslash
        ({"StudyInstanceUID": f"{study_uid(1)},{study_uid(3)}"}, [1, 3]),
        ({"StudyInstanceUID": f"{study_uid(3)}\\{study_uid(2)}"}, [2, 3]),
        ({"0020000D": study_uid(4)}, [4]),
        ({"StudyInstanceUID": study_uid(7)}, []),  # tenant 2 only
        # Modalities in Study: EXISTS over the study's series
        ({"ModalitiesInStudy": "MR"}, [2, 3]),
        ({"ModalitiesInStudy": "SR"}, [1]),
        ({"ModalitiesInStudy": "M*"}, [2, 3]),
        ({"ModalitiesInStudy": "CT\\US"}, [1, 3, 5, 6, 4]),
        ({"ModalitiesInStudy": "PT"}, []),  # only in tenant 2
        # several keys are ANDed
        ({"ModalitiesInStudy": "CT", "StudyDate": "-20191231"}, [3, 5, 6]),
        ({"PatientID": "P1", "StudyDate": "20210301"}, []),
    ],
)
def test_study_matching(corpus: Corpus, params: dict[str, str], expected: list[int] | None) -> None:
    if expected is None:
        assert get(corpus, "/studies", params).status_code == 400
        return
    assert studies(corpus, params) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("doe", [1, 4]),  # case-insensitive, family name
        ("DOE^J", [1, 4]),
        ("john", [1]),  # any component
        ("muller", [2]),  # accent-insensitive
        ("MÜLLER", [2]),
        ("zoe", [2]),
        ("marie", [3]),  # third component
        ("mar*", [3]),
        ("ann", [3]),  # prefix of a component
        ("nne", []),  # not a prefix
        ("lee_ann", [5]),  # '_' still literal
        ("lee?ann", [5, 6]),
        ("smith^anne", [3]),
        ("tenant", []),  # tenant 2 only
        ("doe john", [1]),  # consecutive components
        ("johnathanandmoreletters", []),  # longer than the indexed prefixes (PostgreSQL)
        ("d'oe", []),
        ("j", [1, 4]),
    ],
)
def test_fuzzy_patient_name(corpus: Corpus, value: str, expected: list[int]) -> None:
    assert studies(corpus, {"PatientName": value, "fuzzymatching": "true"}) == expected


def test_fuzzy_off_is_exact(corpus: Corpus) -> None:
    assert studies(corpus, {"PatientName": "doe", "fuzzymatching": "false"}) == []
    assert studies(corpus, {"ReferringPhysicianName": "greg", "fuzzymatching": "true"}) == [1]


def test_matching_keys_are_returned(corpus: Corpus) -> None:
    (item,) = items(get(corpus, "/studies", {"StudyDescription": "CT chest"}))
    assert item["00081030"] == {"vr": "LO", "Value": ["CT chest"]}
    for item in items(get(corpus, "/studies", {"StudyDescription": ""})):
        assert "00081030" in item
    (item,) = items(get(corpus, "/studies", {"StudyID": "S4"}))
    assert item["00080020"] == {"vr": "DA"}
    assert item["00080061"] == {"vr": "CS", "Value": ["US"]}


def test_includefield(corpus: Corpus) -> None:
    params = [("StudyID", "S1"), ("includefield", "StudyDescription"), ("includefield", "00101010")]
    (item,) = items(get(corpus, "/studies", params))
    assert item["00081030"]["Value"] == ["CT chest"]
    assert item["00101010"] == {"vr": "AS", "Value": ["042Y"]}
    (item,) = items(get(corpus, "/studies", {"StudyID": "S1", "includefield": "00081030,Modality"}))
    assert "00081030" in item and "00080060" not in item  # series attribute: not at study level
    (item,) = items(get(corpus, "/studies", {"StudyID": "S2", "includefield": "PatientAge"}))
    assert item["00101010"] == {"vr": "AS"}
    (item,) = items(get(corpus, "/studies", {"StudyID": "S1", "includefield": "all"}))
    assert item["00081030"]["Value"] == ["CT chest"]
    assert item["00101010"]["Value"] == ["042Y"]
    assert item["00201208"]["Value"] == [4]
    assert "00080060" not in item and "00080018" not in item


def test_unsupported_matching_key_warns(corpus: Corpus) -> None:
    response = get(corpus, "/studies", {"Modality": "MR", "StudyID": "S1"})
    assert [first(i, "00200010") for i in items(response)] == ["S1"]  # Modality ignored
    assert response.headers.get_list("warning") == [
        '299 testserver: "The following attributes are not supported as matching keys: Modality"'
    ]
    response = get(corpus, "/studies", {"ReferencedSOPSequence.ReferencedSOPClassUID": CT})
    assert len(items(response)) == 6
    assert "ReferencedSOPSequence.ReferencedSOPClassUID" in response.headers["warning"]


def test_study_paging(corpus: Corpus) -> None:
    response = get(corpus, "/studies", {"limit": "2"})
    assert [int(first(i, STUDY_UID).rsplit(".", 1)[1]) for i in items(response)] == [2, 1]
    assert response.headers.get_list("warning") == [TRUNCATED]
    response = get(corpus, "/studies", {"limit": "2", "offset": "2"})
    assert len(items(response)) == 2 and response.headers.get_list("warning") == [TRUNCATED]
    response = get(corpus, "/studies", {"limit": "2", "offset": "4"})
    assert studies(corpus, {"limit": "2", "offset": "4"}) == [6, 4]
    assert "warning" not in response.headers
    assert studies(corpus, {"offset": "3"}) == [5, 6, 4]
    response = get(corpus, "/studies", {"offset": "6"})
    assert response.status_code == 204 and "warning" not in response.headers


def test_default_and_max_limit(corpus: Corpus) -> None:
    settings = corpus.archive.settings
    saved = (settings.qido_default_limit, settings.qido_max_limit)
    try:
        settings.qido_default_limit, settings.qido_max_limit = 3, 4
        response = get(corpus, "/studies")
        assert len(items(response)) == 3 and response.headers["warning"] == TRUNCATED
        response = get(corpus, "/studies", {"limit": "100"})
        assert len(items(response)) == 4 and response.headers["warning"] == TRUNCATED
    finally:
        settings.qido_default_limit, settings.qido_max_limit = saved


def test_empty_result_is_204(corpus: Corpus) -> None:
    response = get(corpus, "/studies", {"PatientID": "nobody"})
    assert response.status_code == 204
    assert response.content == b""


# ---------------------------------------------------------------------------------------------
# series level


def test_series_of_study(corpus: Corpus) -> None:
    response = get(corpus, f"/studies/{study_uid(1)}/series")
    found = items(response)
    assert [first(i, SERIES_UID) for i in found] == [series_uid(1, 1), series_uid(1, 2)]
    ct, sr = found
    assert set(ct) == {
        "00080060",
        "0008103E",
        "00081190",
        "0020000E",
        "00200011",
        "00201209",
        "00400244",
        "00400245",
        "00400275",
    }
    assert ct["00201209"] == {"vr": "IS", "Value": [3]}
    assert sr["00201209"] == {"vr": "IS", "Value": [1]}
    assert ct["00080060"]["Value"] == ["CT"] and ct["00200011"]["Value"] == [1]
    assert ct["0008103E"]["Value"] == ["axial"]
    assert sr["0008103E"] == {"vr": "LO"}
    assert ct["00081190"]["Value"] == [
        f"http://testserver/dicomweb/studies/{study_uid(1)}/series/{series_uid(1, 1)}"
    ]


def test_all_series_carry_study_attributes(corpus: Corpus) -> None:
    found = items(get(corpus, "/series", {"Modality": "MR"}))
    assert [first(i, SERIES_UID) for i in found] == [series_uid(2, 1), series_uid(3, 2)]
    assert found[0]["00100010"]["Value"] == [{"Alphabetic": "Müller^Zoë"}]
    assert found[0]["00201208"]["Value"] == [2]
    assert found[1]["00080061"]["Value"] == ["CT", "MR"]


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("/series", {"Modality": "C?"}, [(1, 1), (5, 1), (6, 1), (3, 1)]),
        ("/series", {"Modality": "CT\\SR", "PatientID": "P1"}, [(1, 1), (1, 2)]),
        ("/series", {"SeriesNumber": "7"}, [(3, 1)]),
        ("/series", {"00200011": "5"}, [(2, 1)]),
        ("/series", {"SeriesNumber": "99"}, []),
        (
            "/series",
            {"SeriesInstanceUID": f"{series_uid(3, 2)},{series_uid(2, 1)}"},
            [(2, 1), (3, 2)],
        ),
        ("/series", {"SeriesDescription": "ax*"}, [(1, 1)]),
        ("/series", {"PerformedProcedureStepStartDate": "20200101-"}, [(1, 1), (2, 1)]),
        ("/series", {"PerformedProcedureStepStartDate": "-20201231"}, [(1, 1)]),
        ("/series", {"PerformedProcedureStepStartTime": "0800-0959"}, [(2, 1)]),
        ("/series", {"PerformedProcedureStepStartTime": "10"}, [(1, 1)]),
        ("/series", {"StudyDate": "20200115"}, [(1, 1), (1, 2)]),
        ("/series", {"PatientName": "smith", "fuzzymatching": "true"}, [(3, 1), (3, 2)]),
        ("/series", {"AccessionNumber": "ACC_2"}, [(2, 1)]),
        ("/series", {"ModalitiesInStudy": "SR", "Modality": "CT"}, [(1, 1)]),
        (f"/studies/{study_uid(3)}/series", {"Modality": "MR"}, [(3, 2)]),
        (f"/studies/{study_uid(3)}/series", {"SeriesNumber": "7"}, [(3, 1)]),
        (f"/studies/{study_uid(2)}/series", {"Modality": "CT"}, []),
        (f"/studies/{study_uid(7)}/series", {}, []),  # tenant 2's study
        (f"/studies/{study_uid(1)}/series", {"PatientID": "P2"}, []),
    ],
)
def test_series_matching(
    corpus: Corpus, path: str, params: dict[str, str], expected: list[tuple[int, int]]
) -> None:
    assert series_of(corpus, path, params) == [series_uid(n, m) for n, m in expected]


def test_series_ordering_and_paging(corpus: Corpus) -> None:
    all_series = series_of(corpus, "/series")
    # series_number ascending (NULL last), then pk
    assert all_series == [
        series_uid(1, 1),
        series_uid(5, 1),
        series_uid(6, 1),
        series_uid(1, 2),
        series_uid(2, 1),
        series_uid(3, 1),
        series_uid(3, 2),
        series_uid(4, 1),
    ]
    response = get(corpus, "/series", {"limit": "3", "offset": "3"})
    assert [first(i, SERIES_UID) for i in items(response)] == all_series[3:6]
    assert response.headers["warning"] == TRUNCATED


def test_series_includefield(corpus: Corpus) -> None:
    path = f"/studies/{study_uid(1)}/series"
    (item,) = items(get(corpus, path, {"SeriesNumber": "1", "includefield": "Manufacturer"}))
    assert item["00080070"]["Value"] == ["ACME"]
    (item,) = items(get(corpus, path, {"SeriesNumber": "1", "includefield": "all"}))
    assert item["00080070"]["Value"] == ["ACME"]
    assert "00100010" not in item  # study-scoped: series attributes only
    (item,) = items(get(corpus, path, {"SeriesNumber": "1", "PatientID": ""}))
    assert item["00100020"]["Value"] == ["P1"]  # a return key of an upper level


# ---------------------------------------------------------------------------------------------
# instance level


def test_instances_of_series(corpus: Corpus) -> None:
    path = f"/studies/{study_uid(1)}/series/{series_uid(1, 1)}/instances"
    found = items(get(corpus, path))
    assert [first(i, SOP_UID) for i in found] == [sop_uid(1, 1, k) for k in (1, 2, 3)]
    item = found[0]
    assert set(item) == {
        "00080016",
        "00080018",
        "00080056",
        "00081190",
        "00200013",
        "00280008",
        "00280010",
        "00280011",
        "00280100",
    }
    assert item["00080016"]["Value"] == [CT]
    assert item["00200013"] == {"vr": "IS", "Value": [1]}
    assert item["00280010"] == {"vr": "US", "Value": [2]}
    assert item["00280100"] == {"vr": "US", "Value": [16]}
    assert item["00280008"] == {"vr": "IS"}
    assert item["00081190"]["Value"] == [
        f"http://testserver/dicomweb/studies/{study_uid(1)}/series/{series_uid(1, 1)}"
        f"/instances/{sop_uid(1, 1, 1)}"
    ]


def test_instances_of_study_carry_series_attributes(corpus: Corpus) -> None:
    found = items(get(corpus, f"/studies/{study_uid(1)}/instances"))
    assert [first(i, SOP_UID) for i in found] == [
        sop_uid(1, 1, 1),
        sop_uid(1, 1, 2),
        sop_uid(1, 1, 3),
        sop_uid(1, 2, 1),
    ]
    assert found[3]["00080060"]["Value"] == ["SR"]
    assert found[3]["00201209"]["Value"] == [1]
    assert "00100010" not in found[0]


def test_all_instances_carry_study_and_series_attributes(corpus: Corpus) -> None:
    (item,) = items(get(corpus, "/instances", {"SOPClassUID": SR}))
    assert item["00080018"]["Value"] == [sop_uid(1, 2, 1)]
    assert item["00100010"]["Value"] == [{"Alphabetic": "Doe^John"}]
    assert item["00080060"]["Value"] == ["SR"]
    assert item["00201208"]["Value"] == [4]


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("/instances", {"SOPClassUID": MR}, [(2, 1, 1), (2, 1, 2), (3, 2, 1)]),
        ("/instances", {"00080016": MR, "PatientID": "P%3"}, [(3, 2, 1)]),
        ("/instances", {"InstanceNumber": "10"}, [(2, 1, 1)]),
        (
            "/instances",
            {"SOPInstanceUID": f"{sop_uid(1, 1, 3)}\\{sop_uid(4, 1, 1)}"},
            [(1, 1, 3), (4, 1, 1)],
        ),
        ("/instances", {"Modality": "MR", "PatientID": "P2"}, [(2, 1, 1), (2, 1, 2)]),
        (
            "/instances",
            {"PatientName": "doe", "fuzzymatching": "true"},
            [(1, 1, 1), (1, 1, 2), (1, 1, 3), (1, 2, 1), (4, 1, 1)],
        ),
        ("/instances", {"StudyDate": "20200101-", "Modality": "MR"}, [(2, 1, 1), (2, 1, 2)]),
        ("/instances", {"SeriesNumber": "2"}, [(1, 2, 1)]),
        ("/instances", {"Rows": "2"}, [(1, 1, 1), (1, 1, 2), (1, 1, 3)]),
        (f"/studies/{study_uid(1)}/instances", {"InstanceNumber": "2"}, [(1, 1, 2)]),
        (f"/studies/{study_uid(1)}/instances", {"Modality": "SR"}, [(1, 2, 1)]),
        (
            f"/studies/{study_uid(2)}/series/{series_uid(2, 1)}/instances",
            {"InstanceNumber": "11"},
            [(2, 1, 2)],
        ),
        (f"/studies/{study_uid(1)}/series/{series_uid(2, 1)}/instances", {}, []),  # wrong study
        (f"/studies/{study_uid(1)}/series/{series_uid(1, 9)}/instances", {}, []),  # tenant 2
    ],
)
def test_instance_matching(
    corpus: Corpus, path: str, params: dict[str, str], expected: list[tuple[int, int, int]]
) -> None:
    assert sops(corpus, path, params) == [sop_uid(*e) for e in expected]


def test_instance_includefield_reads_metadata(corpus: Corpus) -> None:
    path = f"/studies/{study_uid(1)}/series/{series_uid(1, 1)}/instances"
    found = items(get(corpus, path, {"InstanceNumber": "1", "includefield": "ImageType,00280004"}))
    (item,) = found
    assert item["00080008"]["Value"] == ["ORIGINAL", "PRIMARY", "K1"]
    assert item["00280004"]["Value"] == ["MONOCHROME2"]
    (item,) = items(get(corpus, path, {"InstanceNumber": "1", "includefield": "all"}))
    instance_url = (
        f"http://testserver/dicomweb/studies/{study_uid(1)}/series/{series_uid(1, 1)}"
        f"/instances/{sop_uid(1, 1, 1)}"
    )
    assert item["7FE00010"]["BulkDataURI"] == instance_url + "/bulkdata/7FE00010"
    assert item["00100010"]["Value"] == [{"Alphabetic": "Doe^John"}]
    assert item["00080056"]["Value"] == ["ONLINE"]
    assert "\\u0000" not in get(corpus, path, {"includefield": "all"}).text


def test_specific_character_set_at_instance_level(corpus: Corpus) -> None:
    (item, _) = items(get(corpus, f"/studies/{study_uid(2)}/instances"))
    assert item["00080005"]["Value"] == ["ISO_IR 192"]
    (item,) = items(get(corpus, "/studies", {"PatientID": "P2"}))
    assert item["00100010"]["Value"] == [{"Alphabetic": "Müller^Zoë"}]


def test_instance_paging(corpus: Corpus) -> None:
    response = get(corpus, "/instances", {"limit": "5"})
    assert len(items(response)) == 5 and response.headers["warning"] == TRUNCATED
    everything = sops(corpus, "/instances")
    assert len(everything) == 11
    assert sops(corpus, "/instances", {"limit": "4", "offset": "8"}) == everything[8:]


# ---------------------------------------------------------------------------------------------
# tenants, negotiation, errors


def test_tenant_isolation(corpus: Corpus) -> None:
    assert studies(corpus, {"PatientID": "P7"}) == []
    assert studies(corpus, {"StudyID": "T2-S1"}) == []
    assert series_of(corpus, "/series", {"Modality": "PT"}) == []
    assert len(sops(corpus, f"/studies/{study_uid(1)}/instances")) == 4
    assert len(sops(corpus, "/instances")) == 11
    # the same query for tenant 2 sees only tenant 2's data
    query = parse_query([("PatientName", "Doe*")], level=Level.STUDY)
    result = search(corpus.archive, 2, query, "http://x/dicomweb")
    assert sorted(first(i, "00200010") for i in result.items) == ["T2-S1", "T2-S7"]
    t2 = next(i for i in result.items if first(i, "00200010") == "T2-S1")
    assert t2["00201208"]["Value"] == [6] and t2["00080061"]["Value"] == ["CT", "PT"]


@pytest.mark.parametrize(
    ("accept", "status", "media"),
    [
        ("application/dicom+json", 200, "application/dicom+json"),
        ("application/json", 200, "application/json"),
        ("*/*", 200, "application/dicom+json"),
        ("application/*", 200, "application/dicom+json"),
        ("text/html, application/json;q=0.5", 200, "application/json"),
        ('multipart/related; type="application/dicom+xml"', 406, None),
        ("application/dicom+xml", 406, None),
        ("application/dicom+json;q=0", 406, None),
        ("application/", 400, None),
    ],
)
def test_accept_negotiation(corpus: Corpus, accept: str, status: int, media: str | None) -> None:
    response = get(corpus, "/studies", {"StudyID": "S1"}, accept=accept)
    assert response.status_code == status, response.text
    if media is not None:
        assert response.headers["content-type"] == media
        assert len(response.json()) == 1
    else:
        assert response.json()["error"]


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/studies", {"Foo": "1"}, "unknown query parameter"),
        ("/studies", {"includefield": "NoSuchThing"}, "unknown"),
        ("/studies", {"StudyDate": "2020-13-01"}, "StudyDate"),
        ("/studies", {"StudyDate": "20201301"}, "StudyDate"),
        ("/studies", {"StudyTime": "25"}, "StudyTime"),
        ("/studies", {"StudyInstanceUID": "1.2.x"}, "not a valid UID"),
        ("/series", {"SeriesNumber": "one"}, "SeriesNumber"),
        ("/series", {"SeriesNumber": "1*"}, "wildcards"),
        ("/instances", {"InstanceNumber": "99999999999999999999999"}, "InstanceNumber"),
        ("/studies", {"limit": "-1"}, "limit"),
        ("/studies", {"offset": "x"}, "offset"),
        ("/studies", {"fuzzymatching": "maybe"}, "fuzzymatching"),
        ("/studies/not-a-uid/series", {}, "StudyInstanceUID"),
        (f"/studies/{study_uid(1)}/series/1..2/instances", {}, "SeriesInstanceUID"),
        ("/studies", {"PatientName": "x" * 1025}, "longer than"),
    ],
)
def test_bad_requests_are_400(
    corpus: Corpus, path: str, params: dict[str, str], reason: str
) -> None:
    response = get(corpus, path, params)
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == 400 and reason in body["error"]
    assert "x" * 100 not in body["error"]


def test_repeated_keys_and_too_many_parameters(corpus: Corpus) -> None:
    response = get(corpus, "/studies", [("PatientID", "a"), ("PatientID", "b")])
    assert response.status_code == 400
    response = get(corpus, "/studies", [("includefield", "PatientAge")] * 101)
    assert response.status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        "PatientName=%00",
        "PatientName=%5C",
        "PatientName=%5C%5C*",
        "PatientName=%E2%80%AE&fuzzymatching=true",
        "PatientName=%5E%5E%5E&fuzzymatching=true",
        "PatientName=*%25_%5C?&fuzzymatching=true",
        "PatientID='%20OR%201=1--",
        "StudyDate=-",
        "StudyDate=--",
        "StudyTime=1-2-3",
        "StudyInstanceUID=,",
        "StudyInstanceUID=",
        "ModalitiesInStudy=%5C%5C",
        "00100010=x&PatientName=y",
        "0010001G=x",
        "limit=",
        "includefield=,,,",
        "includefield=7FE00010",
        "AccessionNumber=" + "*?" * 200,
        "%FF=1",
        "=1",
        "limit=0",
        "offset=2147483647",
    ],
)
def test_never_500(corpus: Corpus, query: str) -> None:
    for path in ("/studies", "/series", "/instances", f"/studies/{study_uid(1)}/instances"):
        response = corpus.client.get(f"{BASE}{path}?{query}")
        assert response.status_code in (200, 204, 400), (path, query, response.text)


def test_head_is_served(corpus: Corpus) -> None:
    response = corpus.client.head(f"{BASE}/studies")
    assert response.status_code == 200
