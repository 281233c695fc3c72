"""A synthetic corpus for QIDO-RS tests: studies in two tenants, ingested the real way."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import insert
from starlette.testclient import TestClient

from dicomhub.config import Settings
from dicomhub.services.archive import Archive
from dicomhub.storage.index import tables as t
from dicomhub.web.app import create_app
from tests.helpers import ingest_file, set_file_meta

ROOT = "1.2.826.0.1.3680043.10.999"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SR = "1.2.840.10008.5.1.4.1.1.88.11"
US = "1.2.840.10008.5.1.4.1.1.6.1"


def study_uid(n: int) -> str:
    return f"{ROOT}.{n}"


def series_uid(n: int, m: int) -> str:
    return f"{ROOT}.{n}.{m}"


def sop_uid(n: int, m: int, k: int) -> str:
    return f"{ROOT}.{n}.{m}.{k}"


@dataclass(frozen=True)
class SeriesSpec:
    number: int  # 1-based index in the study (UID component)
    modality: str
    sop_class: str
    series_number: int | None
    instance_numbers: tuple[int | None, ...]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    number: int
    patient: dict[str, Any]
    study: dict[str, Any]
    series: tuple[SeriesSpec, ...]


def make_dataset(
    patient: dict[str, Any],
    study: dict[str, Any],
    spec: SeriesSpec,
    study_no: int,
    k: int,
    instance_number: int | None,
) -> Dataset:
    ds = Dataset()
    for key, value in {**patient, **study, **spec.extra}.items():
        setattr(ds, key, value)
    ds.StudyInstanceUID = study_uid(study_no)
    ds.SeriesInstanceUID = series_uid(study_no, spec.number)
    ds.SOPInstanceUID = sop_uid(study_no, spec.number, k)
    ds.SOPClassUID = spec.sop_class
    ds.Modality = spec.modality
    if spec.series_number is not None:
        ds.SeriesNumber = spec.series_number
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", f"K{k}"]
    set_file_meta(ds)
    return ds


def store(archive: Archive, tenant_id: int, ds: Dataset, directory: Path) -> None:
    path = directory / f"{ds.SOPInstanceUID}-{tenant_id}.dcm"
    ds.save_as(path, enforce_file_format=True)
    ingest_file(archive, tenant_id, path)


def add_tenant(archive: Archive, tenant_id: int, name: str) -> None:
    with archive.db.write() as conn:
        conn.execute(insert(t.tenant).values(id=tenant_id, name=name, created_at=time.time()))


def ingest_study(archive: Archive, tenant_id: int, spec: StudySpec, directory: Path) -> None:
    for series in spec.series:
        for k, number in enumerate(series.instance_numbers, start=1):
            ds = make_dataset(spec.patient, spec.study, series, spec.number, k, number)
            store(archive, tenant_id, ds, directory)


PIXELS = {
    "Rows": 2,
    "Columns": 2,
    "BitsAllocated": 16,
    "BitsStored": 16,
    "HighBit": 15,
    "PixelRepresentation": 0,
    "SamplesPerPixel": 1,
    "PhotometricInterpretation": "MONOCHROME2",
    "PixelData": b"\x01\x00\x02\x00\x03\x00\x04\x00",
}

TENANT1: tuple[StudySpec, ...] = (
    StudySpec(
        1,
        {"PatientName": "Doe^John", "PatientID": "P1", "PatientSex": "M"},
        {
            "StudyDate": "20200115",
            "StudyTime": "101530.25",
            "AccessionNumber": "ACC1",
            "StudyID": "S1",
            "ReferringPhysicianName": "House^Gregory",
            "StudyDescription": "CT chest",
            "PatientAge": "042Y",
        },
        (
            SeriesSpec(
                1,
                "CT",
                CT,
                1,
                (1, 2, 3),
                {
                    "PerformedProcedureStepStartDate": "20200115",
                    "PerformedProcedureStepStartTime": "1000",
                    "SeriesDescription": "axial",
                    "Manufacturer": "ACME",
                    **PIXELS,
                },
            ),
            SeriesSpec(2, "SR", SR, 2, (1,)),
        ),
    ),
    StudySpec(
        2,
        {
            "SpecificCharacterSet": "ISO_IR 192",
            "PatientName": "Müller^Zoë",
            "PatientID": "P2",
            "PatientBirthDate": "19800229",
        },
        {
            "StudyDate": "20210301",
            "StudyTime": "0800",
            "AccessionNumber": "ACC_2",
            "StudyID": "S2",
            "ReferringPhysicianName": "",
        },
        (
            SeriesSpec(
                1,
                "MR",
                MR,
                5,
                (10, 11),
                {
                    "PerformedProcedureStepStartDate": "20210301",
                    "PerformedProcedureStepStartTime": "08",
                },
            ),
        ),
    ),
    StudySpec(
        3,
        {"PatientName": "Smith^Anne^Marie", "PatientID": "P%3"},
        {"StudyDate": "20191231", "StudyTime": "23", "AccessionNumber": "ACCX2", "StudyID": "S3"},
        (
            SeriesSpec(1, "CT", CT, 7, (1,)),
            SeriesSpec(2, "MR", MR, 8, (1,)),
        ),
    ),
    StudySpec(
        4,
        {"PatientName": "DOE^JANE", "PatientID": "P4"},
        {"AccessionNumber": "ACCY2", "StudyID": "S4"},
        (SeriesSpec(1, "US", US, None, (None,)),),
    ),
    StudySpec(
        5,
        {"PatientName": "Lee_Ann^50%", "PatientID": "P5"},
        {"StudyDate": "20180101", "StudyTime": "120000", "StudyID": "S5"},
        (SeriesSpec(1, "CT", CT, 1, (1,)),),
    ),
    StudySpec(
        6,
        {"PatientName": "LeeXAnn^Bob", "PatientID": "PX3"},
        {"StudyDate": "20170101", "StudyTime": "120000", "StudyID": "S6"},
        (SeriesSpec(1, "CT", CT, 1, (1,)),),
    ),
)

#: Tenant 2 holds a copy of study 1 (same UIDs, other content) and a study of its own.
TENANT2: tuple[StudySpec, ...] = (
    StudySpec(
        1,
        {"PatientName": "Doe^John", "PatientID": "P1"},
        {"StudyDate": "20200115", "StudyTime": "101530", "StudyID": "T2-S1"},
        (SeriesSpec(1, "CT", CT, 1, (1, 2, 3, 4, 5)), SeriesSpec(9, "PT", CT, 9, (1,))),
    ),
    StudySpec(
        7,
        {"PatientName": "Doe^Tenant", "PatientID": "P7"},
        {"StudyDate": "20200115", "StudyTime": "101530", "StudyID": "T2-S7"},
        (SeriesSpec(1, "CT", CT, 1, (1,)),),
    ),
)


@dataclass
class Corpus:
    archive: Archive
    client: TestClient
    settings: Settings


def build_corpus(directory: Path, **overrides: Any) -> Corpus:
    """Archive with :data:`TENANT1` in tenant 1 and :data:`TENANT2` in tenant 2."""
    settings = Settings(data_dir=directory / "data", run_workers=False, **overrides)
    archive = Archive.open(settings)
    files = directory / "files"
    files.mkdir()
    for spec in TENANT1:
        ingest_study(archive, 1, spec, files)
    add_tenant(archive, 2, "other-hospital")
    for spec in TENANT2:
        ingest_study(archive, 2, spec, files)
    client = TestClient(create_app(settings, archive), raise_server_exceptions=False)
    return Corpus(archive=archive, client=client, settings=settings)
