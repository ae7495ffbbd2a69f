"""Render the committed reports in headless Chromium: a full-page PNG at 1280 px and an A4 PDF print of each.

    python examples/report_screenshots.py [--out /tmp/kdaudit-shots] [REPORT.html ...]

Without arguments it renders reports/demo, reports/image and (when present) reports/lm. For each report it prints
the page height at 1280 px and the PDF's page count, so a change to the layout shows up as numbers as well as
pictures. tests/test_browser.py runs the same functions; look at the pictures before changing the templates.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 1280
REPORTS = ("demo", "image", "lm")
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_HEIGHT_PROBE = ("<script>document.body.setAttribute('data-height', "
                 "String(document.documentElement.scrollHeight));</script>")


def find_browser() -> str | None:
    """Chromium or Chrome: ``$KDAUDIT_CHROMIUM``, else the first on PATH, else Debian's ``/usr/bin/chromium``."""
    env = os.environ.get("KDAUDIT_CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None  # Debian's, when off PATH


def chromium(browser: str, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    """Run headless Chromium with a fresh profile and no network chatter."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def page_height(browser: str, html: Path) -> int:
    """The document's height in CSS px at 1280 px wide (a probe script on a copy; the report stays script-free)."""
    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "probe.html"
        # The report's Content-Security-Policy forbids scripts: the copy drops it so the probe can run.
        page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>\n?', "", html.read_text(encoding="utf-8"),
                      count=1)
        probe.write_text(page.replace("</body>", _HEIGHT_PROBE + "</body>"), encoding="utf-8")
        r = chromium(browser, "--dump-dom", f"--window-size={WIDTH},1000", probe.as_uri())
    m = re.search(r'data-height="(\d+)"', r.stdout)
    if not m:
        raise RuntimeError(f"could not measure {html}: {r.stderr[-500:]}")
    return int(m.group(1))


def pdf_pages(pdf: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf.read_bytes()))


def render(browser: str, html: Path, out_dir: Path, stem: str) -> dict[str, object]:
    """Full-page PNG at 1280 px and a PDF print of ``html``; returns their paths, the height and the page count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    height = page_height(browser, html)
    png, pdf = out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"
    chromium(browser, f"--screenshot={png}", f"--window-size={WIDTH},{height}", html.resolve().as_uri())
    chromium(browser, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", html.resolve().as_uri())
    if not png.exists() or not pdf.exists():
        raise RuntimeError(f"Chromium wrote no {png if not png.exists() else pdf}")
    return {"png": png, "pdf": pdf, "height_px": height, "pdf_pages": pdf_pages(pdf)}


def committed_reports() -> list[tuple[str, Path]]:
    return [(name, ROOT / "reports" / name / "report.html") for name in REPORTS
            if (ROOT / "reports" / name / "report.html").exists()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="*", type=Path, help="report.html files (default: the committed ones)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "kdaudit-shots")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print("no Chromium found: install the 'chromium' package, or set KDAUDIT_CHROMIUM", file=sys.stderr)
        return 2
    items = [(p.parent.name, p) for p in args.reports] or committed_reports()
    for stem, html in items:
        r = render(browser, html, args.out, stem)
        print(f"{stem}: {r['height_px']} px high at {WIDTH} px, {r['pdf_pages']} PDF pages -> {r['png']}, {r['pdf']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
