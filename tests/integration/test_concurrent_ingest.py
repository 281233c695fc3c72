"""Several processes ingest the same instances at once: exactly one copy each, exact counters.

Three OS processes (as three stateless nodes would) store the same 100 instances through
``ingest.store`` into one index, each in its own order; a fourth sends five of them with other
content. Identical duplicates must succeed, conflicting ones follow the duplicate policy
(reject: 409 Conflict), nothing else may fail, and fsck must find the archive consistent.
"""

from __future__ import annotations

import multiprocessing
import random
from collections import Counter
from multiprocessing.synchronize import Barrier
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from sqlalchemy import func, select

from dicomhub.config import Settings
from dicomhub.errors import Conflict
from dicomhub.services import ingest
from dicomhub.services.archive import Archive
from dicomhub.services.fsck import fsck
from dicomhub.services.spool import sha256_of, spool_file
from dicomhub.storage.index import tables as t
from tests.helpers import ct_image, part10_bytes

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]

N = 100
NODES = 3
ALTERED = 5
ROOT = "1.2.826.0.1.3680043.10.1234"


def make_files(folder: Path, *, altered: bool = False) -> list[Path]:
    """100 instances in 2 studies, 5 series (or the first ALTERED of them, other pixels)."""
    folder.mkdir()
    out: list[Path] = []
    for i in range(ALTERED if altered else N):
        series = i % 5
        study = series % 2
        ds = ct_image(
            sop=f"{ROOT}.3.{i}",
            study=f"{ROOT}.1.{study}",
            series=f"{ROOT}.2.{series}",
            patient_name=f"RACE^PATIENT{study}",
            patient_id=f"RACE{study}",
            size=8,
            bits_allocated=8,
            bits_stored=8,
            pixel_data=bytes([(i + (7 if altered else 0)) % 256]) * 64,
        )
        ds.Modality = "MR" if series < 2 else "CT"
        ds.InstanceNumber = i
        path = folder / f"{i}.dcm"
        path.write_bytes(part10_bytes(ds))
        out.append(path)
    return out


def node(data_dir: str, files: list[str], seed: int, barrier: Barrier, results: Any) -> None:
    """One node: store every file in its own order; report outcome counts.

    The backend comes from the ``DICOMHUB_*`` environment the test exported (inherited).
    """
    outcomes: Counter[str] = Counter()
    try:
        settings = Settings(data_dir=Path(data_dir), run_workers=False)
        archive = Archive.open(settings, migrate=False)
        order = list(files)
        random.Random(seed).shuffle(order)
        barrier.wait(timeout=60)
        try:
            for name in order:
                spool, sha = spool_file(Path(name), settings.tmp_dir, settings.max_instance_bytes)
                try:
                    outcomes[ingest.store(archive, 1, spool, sha).outcome] += 1
                except Conflict:
                    outcomes["conflict"] += 1
                except Exception as exc:
                    outcomes[f"error {type(exc).__name__}: {exc}"[:300]] += 1
        finally:
            archive.close()
    except BaseException as exc:
        outcomes[f"error (node) {type(exc).__name__}: {exc}"[:300]] += 1
    finally:
        results.put(dict(outcomes))


def test_concurrent_ingest_of_the_same_instances(settings: Settings, tmp_path: Path) -> None:
    Archive.open(settings).close()  # migrated before the nodes start
    files = make_files(tmp_path / "files")
    altered = make_files(tmp_path / "altered", altered=True)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(NODES + 1)
    results = ctx.Queue()
    work = [[str(f) for f in files]] * NODES + [[str(f) for f in altered]]
    procs = [
        ctx.Process(target=node, args=(str(settings.data_dir), w, seed, barrier, results))
        for seed, w in enumerate(work)
    ]
    for p in procs:
        p.start()
    outcomes: Counter[str] = Counter()
    try:
        for _ in procs:
            outcomes.update(results.get(timeout=240))
    except Empty:
        pytest.fail("a node did not finish")
    finally:
        for p in procs:
            p.join(timeout=30)
    assert all(p.exitcode == 0 for p in procs)

    errors = {k: v for k, v in outcomes.items() if k.startswith("error")}
    assert errors == {}
    # Every store is accounted for: one "stored" per instance, the rest duplicates or conflicts.
    assert sum(outcomes.values()) == NODES * N + ALTERED
    assert outcomes["stored"] == N
    # Each altered instance conflicts with whichever version committed first: the 3 identical
    # copies conflict if the altered one won, else the altered one does.
    assert ALTERED <= outcomes["conflict"] <= NODES * ALTERED

    archive = Archive.open(settings)
    try:
        with archive.db.read() as conn:
            n = conn.execute(select(func.count()).select_from(t.instance)).scalar_one()
            per_series = dict(
                conn.execute(select(t.series.c.series_uid, t.series.c.num_instances)).all()
            )
            studies = {
                r.study_uid: r
                for r in conn.execute(
                    select(
                        t.study.c.study_uid,
                        t.study.c.num_instances,
                        t.study.c.num_series,
                        t.study.c.modalities,
                    )
                )
            }
            pending = conn.execute(select(func.count()).select_from(t.pending_blob)).scalar_one()
            hashes = dict(conn.execute(select(t.instance.c.sop_uid, t.instance.c.sha256)).all())
        assert n == N
        assert pending == 0
        assert per_series == {f"{ROOT}.2.{s}": N // 5 for s in range(5)}
        assert {uid: (r.num_instances, r.num_series) for uid, r in studies.items()} == {
            f"{ROOT}.1.0": (60, 3),
            f"{ROOT}.1.1": (40, 2),
        }
        assert {r.modalities for r in studies.values()} == {"CT\\MR"}
        for i in range(ALTERED):  # exactly one version of each altered instance
            assert hashes[f"{ROOT}.3.{i}"] in {sha256_of(files[i]), sha256_of(altered[i])}
        assert len(list(archive.blobs.keys())) == N
        report = fsck(archive)
        assert report.ok, report.to_dict()
    finally:
        archive.close()
