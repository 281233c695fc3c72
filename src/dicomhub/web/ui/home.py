"""The landing page a newcomer sees at ``/``: what is running, how much is stored, where to go."""

from __future__ import annotations

import html

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse

from dicomhub import __version__
from dicomhub.storage.index import tables as t
from dicomhub.web.context import archive_of, base_url, tenant_of

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dicomhub</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 46rem; margin: 3rem auto; padding: 0 1rem;
       color: #1d2733; }}
code {{ background: #eef2f6; padding: .1rem .3rem; border-radius: 4px; }}
table {{ border-collapse: collapse; }} td {{ padding: .2rem 1rem .2rem 0; }}
</style></head>
<body>
<h1>dicomhub {version}</h1>
<p>PACS on demand: a DICOM archive speaking DICOMweb (PS3.18).</p>
<table>
<tr><td>Studies</td><td id="studies">{studies}</td></tr>
<tr><td>Series</td><td id="series">{series}</td></tr>
<tr><td>Instances</td><td id="instances">{instances}</td></tr>
</table>
<h2>DICOMweb</h2>
<p>Root: <code>{root}</code></p>
<ul>
<li>Store (STOW-RS): <code>POST {root}/studies</code></li>
<li>Search (QIDO-RS): <a href="{root}/studies?limit=25">{root}/studies</a></li>
<li>Retrieve (WADO-RS): <code>GET {root}/studies/&lt;StudyInstanceUID&gt;</code></li>
</ul>
<p>See the README and <code>docs/</code> for the tour, configuration and the conformance
statement.</p>
</body></html>
"""


async def home(request: Request) -> HTMLResponse:
    """GET /: a small status page."""
    archive = archive_of(request)
    tenant = tenant_of(request)

    def counts() -> tuple[int, int, int]:
        with archive.db.read() as conn:
            row = conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(t.study.c.num_series), 0),
                    func.coalesce(func.sum(t.study.c.num_instances), 0),
                ).where(t.study.c.tenant_id == tenant)
            ).one()
        return int(row[0]), int(row[1]), int(row[2])

    studies, series, instances = await run_in_threadpool(counts)
    page = PAGE.format(
        version=__version__,
        studies=studies,
        series=series,
        instances=instances,
        root=html.escape(base_url(request)),
    )
    return HTMLResponse(page)
