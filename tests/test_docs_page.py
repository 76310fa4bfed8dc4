"""/docs in a real browser: headless Chromium opens the Swagger UI page (assets served by the bridge, no network),
every path of /openapi.json is listed, and a request can be tried from the page. `/` links to it."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.support.chromium import chromium_page, find_chromium
from tests.support.double import StyleDouble
from tests.support.live_bridge import live_bridge

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (python3 install.py --test installs "
                                                         "Debian's chromium where it can; or set PIXART_CHROMIUM)")


def test_docs_lists_every_path_and_runs_a_request(tmp_path: Path) -> None:
    with live_bridge(tmp_path, double=StyleDouble) as url:
        with urllib.request.urlopen(url + "/openapi.json", timeout=30) as resp:
            spec = json.loads(resp.read())
        page_request = urllib.request.Request(url + "/", headers={"Accept": "text/html"})
        with urllib.request.urlopen(page_request, timeout=30) as resp:
            assert 'href="/docs"' in resp.read().decode()  # a browser at / finds the docs
        with urllib.request.urlopen(url + "/", timeout=30) as resp:
            assert json.loads(resp.read())["docs"] == "/docs"  # AleaArt's JSON index names them too
        assert CHROMIUM is not None
        with chromium_page(CHROMIUM) as page:
            page.goto(url + "/docs")
            page.wait_for("document.querySelectorAll('.opblock').length > 0")
            # Swagger UI lists each operation once, as method + path.
            listed = page.evaluate("""Array.from(document.querySelectorAll('.opblock-summary')).map(s => [
                s.querySelector('.opblock-summary-method').textContent.trim().toLowerCase(),
                s.querySelector('.opblock-summary-path').getAttribute('data-path')])""")
            expected = {(m, p) for p, ops in spec["paths"].items() for m in ops}
            assert {tuple(x) for x in listed} == expected
            assert page.evaluate("document.querySelector('.info .title').textContent").startswith("Pixart bridge")
            # Try GET /health: open it, "Try it out", "Execute", and read the answer the page shows.
            page.evaluate("""(() => {
                const block = Array.from(document.querySelectorAll('.opblock'))
                    .find(b => b.querySelector('.opblock-summary-path').getAttribute('data-path') === '/health');
                block.querySelector('.opblock-summary-control').click();
            })()""")
            page.wait_for("document.querySelector('.opblock.is-open .try-out__btn') !== null")
            page.evaluate("document.querySelector('.opblock.is-open .try-out__btn').click()")
            page.wait_for("document.querySelector('.opblock.is-open .execute') !== null")
            page.evaluate("document.querySelector('.opblock.is-open .execute').click()")
            status = page.wait_for("""(() => {
                const cell = document.querySelector(
                    '.opblock.is-open .live-responses-table tbody .response-col_status');
                return cell ? cell.textContent.trim() : null; })()""")
            body = page.evaluate("document.querySelector('.opblock.is-open .live-responses-table tbody "
                                 ".response-col_description pre').textContent")
        assert status == "200"
        assert json.loads(body)["status"] == "healthy"
