"""The HTML report renders its tables and images in a real headless browser."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from browser import render_dom, screenshot
from visionflows.report import Report


@pytest.mark.slow
def test_report_renders_images_and_tables_in_chromium(tmp_path):
    img = tmp_path / "figs" / "a.png"
    img.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8)).save(img)
    rep = Report("test report", tmp_path)
    sec = rep.section("Numbers")
    sec.table([{"model": "gaussian", "nll": -2.5}, {"model": "flow", "nll": float("nan")}])
    sec.figure(rep.rel(img), "random pixels")
    path = rep.write()
    html = path.read_text()
    assert "<table>" in html and 'src="figs/a.png"' in html and "—" in html
    counts = render_dom(path)
    assert counts == {"images-loaded": 1, "images-total": 1, "tables": 1}
    # a missing image is detected
    img.unlink()
    assert render_dom(path)["images-loaded"] == 0
    png = screenshot(path, tmp_path / "shot.png", 800, 600)
    with Image.open(png) as shot:
        assert shot.size == (800, 600)
        lo, hi = shot.convert("L").getextrema()
    assert hi - lo > 100, (lo, hi)  # the page drew something (text, table rules), not a blank or uniform frame
