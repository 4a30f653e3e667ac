"""What a batch leaves to look at: a queryable results index and an offline HTML report.

``index.sqlite`` (table ``results``, one row per input: path, content hash, detector, weights checksum,
score, verdict, size, seconds, output files, or the error) can be read with ``sqlite3``, pandas
(``pd.read_sql("select * from results", sqlite3.connect(PATH))``) or duckdb. ``report.html`` is one
self-contained page (no script or style from elsewhere): summary counts, every image as a thumbnail of its
overlay sorted by score (highest first), a filter by verdict, and links to the full-size outputs beside it.
Both are rewritten atomically from ``predictions.jsonl``'s records.
"""
from __future__ import annotations

import html
import json
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .io import atomic_write

COLUMNS = [("input", "TEXT"), ("sha256", "TEXT"), ("model", "TEXT"), ("weights_sha256", "TEXT"),
           ("score", "REAL"), ("verdict", "TEXT"), ("score_threshold", "REAL"), ("false_alarm_rate", "REAL"),
           ("threshold", "REAL"), ("width", "INTEGER"), ("height", "INTEGER"), ("tampered_fraction", "REAL"),
           ("seconds", "REAL"), ("prob", "TEXT"), ("mask", "TEXT"), ("overlay", "TEXT"), ("thumb", "TEXT"),
           ("error", "TEXT")]


def _outputs(r: dict[str, Any]) -> dict[str, str | None]:
    stem = r.get("stem")
    if not stem or "error" in r:
        return {"prob": None, "mask": None, "overlay": None, "thumb": None}
    written = set(r.get("outputs") or (".prob.png", ".mask.png", ".overlay.jpg", ".thumb.jpg"))
    files = {"prob": ".prob.png", "mask": ".mask.png", "overlay": ".overlay.jpg", "thumb": ".thumb.jpg"}
    return {k: (f"{stem}{suffix}" if suffix in written else None) for k, suffix in files.items()}


def write_index(out_dir: Path, records: Iterable[dict[str, Any]]) -> Path:
    """``out_dir/index.sqlite`` from the batch's records, replaced atomically."""
    out_dir = Path(out_dir)
    fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".sqlite", dir=out_dir)
    os.close(fd)
    try:
        con = sqlite3.connect(tmp)
        with con:
            con.execute(f"CREATE TABLE results ({', '.join(f'{n} {t}' for n, t in COLUMNS)})")
            rows = [tuple({**r, **_outputs(r)}.get(n) for n, _ in COLUMNS) for r in records]
            con.executemany(f"INSERT INTO results VALUES ({', '.join('?' * len(COLUMNS))})", rows)
            con.execute("CREATE INDEX by_score ON results(score)")
        con.close()
        os.replace(tmp, out_dir / "index.sqlite")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_dir / "index.sqlite"


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}
.counts span{display:inline-block;margin-right:1.2em}
.filters{margin:1em 0}
.filters label{margin-right:1em;cursor:pointer}
.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:260px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
figure img{width:100%;height:auto;display:block;border-radius:3px}
figcaption{font-size:12px;margin-top:4px;word-break:break-all}
.v{font-weight:600}
.likely-manipulated .v{color:#b00020}.inconclusive .v{color:#a06000}.no-clear-sign .v{color:#2e7d32}
.failed{border-color:#b00020}
"""

_SCRIPT = """
function applyFilter(){
  const on = new Set([...document.querySelectorAll('.filters input:checked')].map(i => i.value));
  let shown = 0;
  document.querySelectorAll('figure').forEach(f => {
    const vis = on.has(f.dataset.verdict); f.hidden = !vis; if (vis) shown++; });
  document.getElementById('shown').textContent = shown;
}
document.querySelectorAll('.filters input').forEach(i => i.addEventListener('change', applyFilter));
applyFilter();
"""


def _slug(verdict: str) -> str:
    return verdict.replace(" ", "-")


def write_report(out_dir: Path, records: list[dict[str, Any]], title: str = "manipseg results") -> Path:
    """``out_dir/report.html``: works offline, opened straight from the folder."""
    out_dir = Path(out_dir)
    ok = [r for r in records if "error" not in r]
    failed = [r for r in records if "error" in r]
    verdicts = [r.get("verdict", "uncalibrated") for r in ok]
    kinds = [v for v in ("likely manipulated", "inconclusive", "no clear sign", "uncalibrated") if v in verdicts]
    counts = " ".join(f"<span><b>{verdicts.count(v)}</b> {html.escape(v)}</span>" for v in kinds)
    if failed:
        counts += f" <span><b>{len(failed)}</b> failed</span>"
        kinds.append("failed")
    boxes = " ".join(f'<label><input type="checkbox" value="{html.escape(v)}" checked> {html.escape(v)}</label>'
                     for v in kinds)
    cards = []
    for r in sorted(ok, key=lambda r: -float(r.get("score", 0.0))):
        o = _outputs(r)
        v = r.get("verdict", "uncalibrated")
        name = html.escape(Path(r["input"]).name)
        thumb = o["thumb"] if o["thumb"] and (out_dir / o["thumb"]).is_file() else o["overlay"]
        links = ", ".join(f'<a href="{html.escape(o[k])}">{label}</a>'
                          for k, label in (("overlay", "overlay"), ("mask", "mask"), ("prob", "map")) if o[k])
        img = f'<img src="{html.escape(thumb)}" alt="{name}" loading="lazy">' if thumb else ""
        cards.append(
            f'<figure class="{_slug(v)}" data-verdict="{html.escape(v)}" data-score="{float(r["score"]):.6f}">'
            + (f'<a href="{html.escape(o["overlay"])}">{img}</a>' if o["overlay"] else img) +
            f'<figcaption><span class="v">{html.escape(v)}</span> · score {float(r["score"]):.3f} · '
            f'{100 * float(r.get("tampered_fraction", 0)):.1f}% marked<br>{name}'
            + (f' ({links})' if links else "") + '</figcaption></figure>')
    for r in failed:
        cards.append(f'<figure class="failed" data-verdict="failed"><figcaption><span class="v">failed</span><br>'
                     f'{html.escape(str(r["error"]))}</figcaption></figure>')
    model = html.escape(", ".join(sorted({str(r.get("model")) for r in records if r.get("model")})))
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{len(records)} inputs analysed with {model}; "
            f"<span id=shown>{len(cards)}</span> shown, highest score first. Scores and marks are clues for a "
            f"person to check, not proof.</p><p class=counts>{counts}</p><div class=filters>{boxes}</div>"
            f"<div class=grid>{''.join(cards)}</div><script>{_SCRIPT}</script></body></html>\n")

    return atomic_write(out_dir / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))


def records_of(jsonl: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(jsonl).read_text(encoding="utf-8").splitlines() if line.strip()]
