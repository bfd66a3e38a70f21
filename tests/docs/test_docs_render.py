"""The documentation site, built and looked at in a headless browser.

The site is built as ``mkdocs build --strict`` builds it, a small probe script is added to every
page, and Chromium (Debian's ``chromium`` package: ``apt-get install -y chromium``) shows each
page in a frame 1400 px wide and in one 390 px wide (a phone); the probe posts what it measured
to the frame's parent, which writes it into its own page, which ``--dump-dom`` hands back.

At 1400 px nothing may overflow: no table, code block or displayed formula wider than its box
(a scroll bar hides columns or the ends of lines), no inline code in a table broken inside a
word, no copy button over the text of a code block, no formula left unrendered or with a TeX
error. At 390 px the same measurements are reported (``-s`` shows them), not asserted: a phone
scrolls some wide tables and formulas sideways, inside their own boxes.

Without Chromium or mkdocs the tests skip on a developer's machine and fail in CI (``CI`` set).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WIDE, PHONE = 1400, 390

#: What the probe measures, once the page (and KaTeX) has rendered. Results go into the DOM as
#: JSON in ``<pre id="gradlab-probe">``.
PROBE_JS = r"""
(function () {
  function label(el) {
    return (el.textContent || "").replace(/\s+/g, " ").trim().slice(0, 70);
  }
  function probe() {
    var col = document.querySelector("article.md-content__inner");
    var cr = col.getBoundingClientRect();
    var pr = col.parentElement.getBoundingClientRect();
    var found = [];
    var boxes = col.querySelectorAll(
      "table, .md-typeset__scrollwrap, pre > code, .katex-display, img");
    for (var i = 0; i < boxes.length; i++) {
      var el = boxes[i];
      var r = el.getBoundingClientRect();
      var hidden = el.scrollWidth - el.clientWidth;
      // a table's scroll box reaches into the column's padding by design: only what it hides
      // counts; on a phone code blocks and formulas reach to the screen's edge, also by design
      var bleed = el.tagName === "CODE" || el.classList.contains("katex-display") ?
        pr.right - cr.right : 0;
      var beyond = el.classList.contains("md-typeset__scrollwrap") ? 0 : r.right - cr.right - bleed;
      if (hidden > 1 || beyond > 1) {
        found.push({what: "overflow", tag: el.tagName.toLowerCase() + "." + el.className,
                    hidden: hidden, beyond: Math.round(beyond), text: label(el)});
      }
    }
    var codes = col.querySelectorAll("td code, th code");
    for (var i = 0; i < codes.length; i++) {
      var c = codes[i];
      // a name may break only where the page marks it may (<wbr> after the dots of a path)
      if (c.getClientRects().length > 1 && !/\s/.test(c.textContent) && !c.querySelector("wbr")) {
        found.push({what: "code broken mid-word", text: label(c)});
      }
    }
    var buttons = col.querySelectorAll("pre > button.md-clipboard");
    for (var i = 0; i < buttons.length; i++) {
      var b = buttons[i].getBoundingClientRect();
      var code = buttons[i].parentElement.querySelector("code");
      if (!code || b.width === 0) continue;
      var range = document.createRange();
      range.selectNodeContents(code);
      var rects = range.getClientRects();
      for (var j = 0; j < rects.length; j++) {
        var t = rects[j];
        if (t.width > 0 && t.left < b.right && t.right > b.left && t.top < b.bottom &&
            t.bottom > b.top) {
          found.push({what: "copy button over text", text: label(code)});
          break;
        }
      }
    }
    var maths = col.querySelectorAll(".arithmatex");
    var unrendered = 0;
    for (var i = 0; i < maths.length; i++) {
      if (!maths[i].querySelector(".katex")) unrendered++;
    }
    if (unrendered) found.push({what: "formula not rendered", text: unrendered + " formulas"});
    var errors = col.querySelectorAll(".katex-error");
    for (var i = 0; i < errors.length; i++) {
      found.push({what: "formula with a TeX error", text: label(errors[i])});
    }
    var out = document.createElement("pre");
    out.id = "gradlab-probe";
    out.textContent = JSON.stringify({
      column: Math.round(cr.width), boxes: boxes.length, formulas: maths.length, found: found});
    document.body.appendChild(out);
    if (window.parent !== window) window.parent.postMessage(out.textContent, "*");
  }
  window.addEventListener("load", function () { setTimeout(probe, 300); });
})();
"""

_RESULT = re.compile(r'<pre id="gradlab-probe">(.*?)</pre>', re.S)


def _require(what: str, available: bool) -> None:
    """Skip without ``what`` on a developer's machine; fail in CI, where it must be installed."""
    if available:
        return
    message = f"{what} is not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it (see this module's docstring)")
    pytest.skip(message)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built into a temporary folder, with the probe added to every page."""
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        mkdocs_found = False
    else:
        mkdocs_found = True
    _require('mkdocs (pip install -e ".[docs]")', mkdocs_found)
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
    (out / "gradlab-probe.js").write_text(PROBE_JS)
    for page in out.rglob("index.html"):
        depth = len(page.relative_to(out).parts) - 1
        src = "../" * depth + "gradlab-probe.js"
        html = page.read_text()
        page.write_text(html.replace("</body>", f'<script src="{src}"></script></body>', 1))
    return out


_EXTERNAL = re.compile(
    r"<script[^>]*\bsrc=\"(?:https?:)?//[^\"]*\"|<link[^>]*\bhref=\"(?:https?:)?//[^\"]*\"[^>]*>"
    r"|url\(\s*['\"]?(?:https?:)?//[^)]*\)"
)


def external_resources(text: str) -> list[str]:
    """Scripts, style sheets and fonts that ``text`` (HTML or CSS) loads from another host."""
    found = _EXTERNAL.findall(text)
    # a <link> that is only a hyperlink (rel="canonical") loads nothing
    return [f for f in found if not re.search(r'rel="(canonical|alternate)"', f)]


def test_external_resources_are_found():
    assert external_resources('<script src="https://cdn.example/katex.js"></script>')
    assert external_resources('<link rel="stylesheet" href="//fonts.example/css">')
    assert external_resources("@font-face{src:url(https://fonts.example/a.woff2)}")
    assert not external_resources('<script src="../javascripts/katex/katex.min.js"></script>')
    assert not external_resources('<link rel="canonical" href="https://gradlab.example/">')
    assert not external_resources("src:url(fonts/KaTeX_Main-Regular.woff2)")


@pytest.mark.slow
def test_site_loads_nothing_from_elsewhere(site):
    """KaTeX, its fonts and the theme's fonts are shipped with the site, not fetched."""
    found = {}
    for path in [*site.rglob("*.html"), *site.rglob("*.css"), *site.rglob("*.js")]:
        hits = external_resources(path.read_text(errors="replace"))
        if hits:
            found[str(path.relative_to(site))] = hits[:3]
    assert not found, found
    assert (site / "javascripts" / "katex" / "katex.min.js").is_file()


def pages(site: Path) -> list[Path]:
    """Every page of the site (the 404 page aside), by its index.html."""
    return sorted(site.rglob("index.html"))


#: A page shown in a frame ``width`` px wide (headless Chromium's windows are at least 500 px
#: wide, so a phone's 390 px needs a frame); the probe in the page posts its findings here.
FRAME_HTML = """<!doctype html><html><body style="margin:0">
<iframe src="{src}" style="width:{width}px;height:1000px;border:0"></iframe>
<script>
window.addEventListener("message", function (e) {{
  var out = document.createElement("pre");
  out.id = "gradlab-probe";
  out.textContent = e.data;
  document.body.appendChild(out);
}});
</script></body></html>"""


def measure(chromium: str, page: Path, width: int) -> dict:
    """What the probe found on ``page`` shown ``width`` px wide."""
    frame = page.parent / f"gradlab-frame-{width}.html"
    frame.write_text(FRAME_HTML.format(src=page.name, width=width))
    run = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--run-all-compositor-stages-before-draw",
            "--virtual-time-budget=5000",
            f"--window-size={max(width, 800) + 40},1100",
            "--dump-dom",
            frame.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = _RESULT.search(run.stdout)
    assert match, f"no probe result from {page} at {width} px:\n{run.stderr[-2000:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def measure_all(chromium: str, site: Path, width: int) -> dict[str, dict]:
    """The probe's findings per page (its path in the site) at ``width`` px."""
    found = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {pool.submit(measure, chromium, p, width): p for p in pages(site)}
        for job, page in jobs.items():
            found[str(page.parent.relative_to(site)) or "."] = job.result()
    return found


def _summary(results: dict[str, dict]) -> str:
    lines = []
    for page, r in results.items():
        for f in r["found"]:
            lines.append(
                f"  {page}: {f['what']} {f.get('tag', '')} {f.get('hidden', '')} "
                f"{f.get('beyond', '')} {f['text']!r}"
            )
    return "\n".join(lines)


@pytest.mark.slow
def test_nothing_overflows_at_1400px(site):
    chromium = _chromium()
    _require("chromium (apt-get install -y chromium)", chromium is not None)
    assert chromium is not None
    results = measure_all(chromium, site, WIDE)
    assert len(results) >= 20, sorted(results)
    # the probe saw the pages' tables and code blocks, and the formulas of the theory page
    assert sum(r["boxes"] for r in results.values()) > 100
    assert results["theory"]["formulas"] > 0
    assert not any(r["found"] for r in results.values()), "\n" + _summary(results)


@pytest.mark.slow
def test_report_phone_width(site):
    """At 390 px: reported, and only the failures that a phone cannot excuse are asserted."""
    chromium = _chromium()
    _require("chromium (apt-get install -y chromium)", chromium is not None)
    assert chromium is not None
    results = measure_all(chromium, site, PHONE)
    print(f"\nat {PHONE} px:\n" + (_summary(results) or "  nothing overflows"))
    unrendered = [p for p, r in results.items() for f in r["found"] if "rendered" in f["what"]]
    assert not unrendered


@pytest.mark.slow
def test_probe_finds_an_overflow(tmp_path):
    """The probe itself: a page with a too-wide table and code block is caught."""
    chromium = _chromium()
    _require("chromium (apt-get install -y chromium)", chromium is not None)
    assert chromium is not None
    row = "<tr>" + "<td>averyveryverylongcellwithoutspaces</td>" * 12 + "</tr>"
    page = tmp_path / "index.html"
    page.write_text(
        '<html><body><article class="md-content__inner" style="width:600px">'
        f'<table style="display:inline-block;max-width:100%;overflow:auto">{row}</table>'
        f"<pre><code style='display:block;overflow:auto'>{'x' * 300}</code></pre>"
        '<table style="width:80px"><tr><td><code style="word-break:break-all">'
        "gradlab.check_modes_all</code></td></tr></table>"
        f"</article><script>{PROBE_JS}</script></body></html>"
    )
    found = measure(chromium, page, WIDE)["found"]
    kinds = sorted({f["what"] + ":" + f.get("tag", "")[:3] for f in found})
    assert "overflow:tab" in kinds and "overflow:cod" in kinds, found
    assert "code broken mid-word:" in kinds, found
