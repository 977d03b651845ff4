"""Self-contained HTML reports of slide runs: ``report.html`` per slide, ``cohort.html`` per
output folder.

One file each, every picture embedded (``data:`` URIs: JPEG for pictures, PNG for matplotlib
plots), no script and no link to fetch, so a report opens with no network and can be mailed.
A slide's report: the thumbnail with its outlines, tissue area, nuclei count and density per
mm^2 of tissue, area and shape distributions, per-type counts when the table has a ``type``
column, the flagged chunks with a picture of each and what was done about them, and the
provenance (weights SHA-256, commit, settings, timings) from ``report.json``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["flagged_chunks", "write_cohort_report", "write_slide_report"]


def flagged_chunks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks of a slide report that raised quality warnings, with their level-0 rectangle.

    Returns
    -------
    list of dict
        ``chunk`` (its name), ``x``, ``y``, ``w``, ``h`` (level-0 pixels, clipped to the slide)
        and ``warnings``, in chunk order.
    """
    chunks = ((report.get("quality") or {}).get("chunks")) or {}
    width, height = report["dimensions"]
    side = report["chunk"] * report["scale"]
    out = []
    for name in sorted(chunks):
        warnings = chunks[name].get("warnings") or []
        match = re.fullmatch(r"r(\d+)_c(\d+)", name)
        if not warnings or match is None:
            continue
        row, col = int(match[1]), int(match[2])
        x, y = round(col * side), round(row * side)
        w, h = min(round(side), width - x), min(round(side), height - y)
        out.append({"chunk": name, "x": x, "y": y, "w": w, "h": h, "warnings": list(warnings)})
    return out


def _data_uri(data: bytes, mime: str) -> str:
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _jpeg(rgb: Any, *, side: int, quality: int = 80) -> str:
    """A ``data:`` URI of ``rgb`` shrunk to at most ``side`` pixels a side, as JPEG."""
    import io

    from PIL import Image

    image = Image.fromarray(rgb)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return _data_uri(buffer.getvalue(), "image/jpeg")


def _figure_uri(figure: Any) -> str:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return _data_uri(buffer.getvalue(), "image/png")


#: Distribution plots of a slide report: column, axis label.
PLOTS = (
    ("area_um2", "area (µm²)"),
    ("eccentricity", "eccentricity"),
    ("solidity", "solidity"),
    ("mean_hematoxylin_od", "mean haematoxylin OD"),
)


def distributions_plot(table: Any) -> str | None:
    """Histograms of :data:`PLOTS` columns present in ``table`` (a ``data:`` URI; None if the
    table is empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = [(c, label) for c, label in PLOTS if c in table.columns]
    if not len(table) or not columns:
        return None
    figure, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 2.6))
    for ax, (column, label) in zip(np.atleast_1d(axes), columns, strict=True):
        values = table[column].to_numpy(float)
        values = values[np.isfinite(values)]
        high = np.percentile(values, 99.5) if values.size else 1.0
        ax.hist(values[values <= high], bins=50, color="#4c72b0")
        ax.set_xlabel(label)
        ax.set_ylabel("nuclei")
        ax.set_title(f"median {np.median(values):.3g}" if values.size else "no values", fontsize=9)
    figure.tight_layout()
    return _figure_uri(figure)


def type_counts(table: Any) -> dict[str, int] | None:
    """Nuclei per ``type`` (None when the table has no ``type`` column)."""
    if "type" not in table.columns:
        return None
    return {str(k): int(v) for k, v in table["type"].astype(str).value_counts().items()}


_STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:20px auto;
padding:0 16px;color:#222}h1{font-size:24px}
h2{font-size:19px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #e4e4e4;
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
.flag{display:flex;gap:14px;margin:10px 0}.flag img{width:220px;height:auto;border:1px solid #999}
code{font-size:13px;word-break:break-all}.muted{color:#666}"""

#: What a slide run does about a flagged chunk (the report says it beside each).
FLAG_ACTION = (
    "Kept as segmented: nucseg removes nothing; the chunk is flagged for a look by eye (zoom in "
    "with `nucseg view`)."
)
MAX_FLAG_PICTURES = 24


def _page(title: str, body: list[str]) -> str:
    from html import escape

    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _rows(pairs: list[tuple[str, Any]]) -> str:
    from html import escape

    cells = []
    for key, value in pairs:
        text = f"{value:,.4g}" if isinstance(value, float) else str(value)
        cells.append(f"<tr><th>{escape(key)}</th><td class=n>{escape(text)}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def _summary(report: dict[str, Any], n_flagged: int) -> list[tuple[str, Any]]:
    width, height = report["dimensions"]
    return [
        ("slide size (level-0 pixels)", f"{width:,} × {height:,}"),
        ("microns per pixel", report["mpp"]),
        ("tissue area (mm²)", report["tissue_mm2"]),
        ("nuclei", f"{report['nuclei']:,}"),
        ("nuclei per mm² of tissue", report.get("nuclei_per_mm2") or 0.0),
        ("chunks (with tissue)", report["chunks"]),
        ("chunks flagged", n_flagged),
        ("nuclei cut by a chunk halo", report.get("cut_nuclei", 0)),
        ("run time (s)", float(report["seconds"])),
    ]


def _flag_sections(report: dict[str, Any], flags: list[dict[str, Any]]) -> list[str]:
    """One block per flagged chunk: a picture read from the slide, its warnings, the action."""
    from html import escape

    if not flags:
        return ["<p>No chunk raised a quality warning.</p>"]
    reader = None
    try:
        from nucseg.slide.reader import open_slide

        reader = open_slide(report["slide"])
    except (OSError, ValueError) as err:
        note = f"(no pictures: the slide cannot be read here: {err})"
        blocks = [f"<p class=muted>{escape(note)}</p>"]
    else:
        blocks = []
    try:
        for flag in flags[:MAX_FLAG_PICTURES]:
            picture = ""
            if reader is not None:
                picture = f'<img alt="chunk {flag["chunk"]}" src="{_chunk_picture(reader, flag)}">'
            reasons = "".join(f"<li>{escape(w)}</li>" for w in flag["warnings"])
            where = f"x {flag['x']}, y {flag['y']}, {flag['w']} × {flag['h']} px"
            blocks.append(
                f"<div class=flag>{picture}<div><b>chunk {escape(flag['chunk'])}</b> "
                f"<span class=muted>({where})</span><ul>{reasons}</ul>"
                f"<p>{escape(FLAG_ACTION)}</p></div></div>"
            )
    finally:
        if reader is not None:
            reader.close()
    if len(flags) > MAX_FLAG_PICTURES:
        blocks.append(
            f"<p>… and {len(flags) - MAX_FLAG_PICTURES} more (report.json lists all).</p>"
        )
    return blocks


def _chunk_picture(reader: Any, flag: dict[str, Any], *, side: int = 240) -> str:
    from nucseg.scale import resize_image

    downsample = max(flag["w"], flag["h"]) / side
    level = reader.best_level(max(downsample, 1.0))
    scale = reader.downsamples[level]
    w, h = max(1, round(flag["w"] / scale)), max(1, round(flag["h"] / scale))
    pixels = reader.read_region(flag["x"], flag["y"], w, h, level)
    if max(w, h) > side:
        factor = side / max(w, h)
        pixels = resize_image(pixels, (max(1, round(h * factor)), max(1, round(w * factor))))
    return _jpeg(pixels, side=side)


def _provenance(report: dict[str, Any]) -> list[tuple[str, Any]]:
    model = report.get("model") or {}
    pairs = [
        ("command", report.get("command", "")),
        ("commit", report.get("commit") or "unknown"),
        ("code modified", "yes" if report.get("dirty") else "no"),
        ("nucseg", report.get("nucseg", "")),
        ("date", report.get("date", "")),
        ("model", model.get("model") or model.get("method") or model.get("callable", "")),
        ("weights SHA-256", model.get("sha256", "—")),
        ("model mpp", model.get("mpp", "—")),
        ("prediction settings", report.get("predict")),
        ("stain", report.get("stain")),
        ("chunk, halo (work pixels)", f"{report.get('chunk')}, {report.get('halo')}"),
    ]
    pairs += [(f"time: {k}", round(float(v), 2)) for k, v in (report.get("times") or {}).items()]
    return pairs


def slide_report_html(folder: Any) -> str:
    """The HTML of a slide's ``report.html``, from the files of its output folder."""
    import json
    from html import escape
    from pathlib import Path

    import pandas as pd
    import pyarrow.parquet as pq

    from nucseg.io import read_image

    folder = Path(folder)
    report = json.loads((folder / "report.json").read_text())
    names = pq.read_schema(folder / "nuclei.parquet").names
    wanted = [c for c, _ in PLOTS if c in names] + (["type"] if "type" in names else [])
    table = pd.read_parquet(folder / "nuclei.parquet", columns=wanted)
    flags = flagged_chunks(report)
    title = f"nucseg slide report: {folder.name}"
    body = [f"<h1>{escape(title)}</h1>", f"<p class=muted>{escape(str(report['slide']))}</p>"]
    body += ["<h2>Summary</h2>", _rows(_summary(report, len(flags)))]
    thumbnail = folder / "thumbnail_overlay.png"
    if thumbnail.is_file():
        uri = _jpeg(read_image(thumbnail), side=1600)
        body += ["<h2>Slide and nuclei outlines</h2>", f'<img alt="thumbnail" src="{uri}">']
    counts = type_counts(table)
    if counts is not None:
        body += ["<h2>Nucleus types</h2>", _rows(sorted(counts.items()))]
    plot = distributions_plot(table)
    body += ["<h2>Size and shape</h2>", f'<img alt="distributions" src="{plot}">' if plot else
             "<p>No nuclei.</p>"]  # fmt: skip
    body += ["<h2>Quality flags</h2>", *_flag_sections(report, flags)]
    body += ["<h2>Provenance</h2>", _rows(_provenance(report))]
    return _page(title, body)


def write_slide_report(folder: Any, *, overwrite: bool = False) -> Any:
    """Write ``report.html`` into a slide's output folder; returns its path."""
    from pathlib import Path

    from nucseg.atomic import atomic_write

    path = Path(folder) / "report.html"
    text = slide_report_html(folder)
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _cohort_plot(names: list[str], densities: list[float], areas: list[Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = 1.2 + 0.28 * len(names)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, height), sharey=True)
    positions = list(range(len(names)))
    left.barh(positions, densities, color="#4c72b0")
    left.set_yticks(positions, names)
    left.invert_yaxis()
    left.set_xlabel("nuclei per mm² of tissue")
    horizontal = (
        {"orientation": "horizontal"}
        if tuple(int(v) for v in matplotlib.__version__.split(".")[:2]) >= (3, 10)
        else {"vert": False}
    )
    right.boxplot(areas, positions=positions, showfliers=False, **horizontal)
    right.set_xlabel("nucleus area (µm²)")
    figure.tight_layout()
    return _figure_uri(figure)


def cohort_report_html(out_dir: Any) -> str:
    """The HTML of ``cohort.html``: one row, bar and box per slide folder of ``out_dir``."""
    import json
    from html import escape
    from pathlib import Path
    from urllib.parse import quote

    import numpy as np
    import pandas as pd

    from nucseg.io import read_image

    out_dir = Path(out_dir)
    folders = sorted(p.parent for p in out_dir.glob("*/report.json"))
    rng = np.random.default_rng(0)
    rows, names, densities, areas, pictures = [], [], [], [], []
    for folder in folders:
        report = json.loads((folder / "report.json").read_text())
        area = pd.read_parquet(folder / "nuclei.parquet", columns=["area_um2"])["area_um2"]
        area = area.to_numpy(float)
        sample = rng.choice(area, size=min(area.size, 20_000), replace=False) if area.size else [0]
        names.append(folder.name)
        densities.append(report.get("nuclei_per_mm2") or 0.0)
        areas.append(sample)
        link = f'<a href="{quote(folder.name)}/report.html">{escape(folder.name)}</a>'
        flagged = len(flagged_chunks(report))
        rows.append(
            f"<tr><td>{link}</td><td class=n>{report['nuclei']:,}</td>"
            f"<td class=n>{report['tissue_mm2']:.3g}</td><td class=n>{densities[-1]:,.0f}</td>"
            f"<td class=n>{flagged}</td><td class=n>{report['seconds'] / 60:.1f}</td></tr>"
        )
        thumbnail = folder / "thumbnail_overlay.png"
        if thumbnail.is_file():
            uri = _jpeg(read_image(thumbnail), side=320, quality=75)
            pictures.append(f'<figure style="display:inline-block;margin:6px"><img src="{uri}" '
                            f'alt="{escape(folder.name)}"><figcaption>{escape(folder.name)}'
                            "</figcaption></figure>")  # fmt: skip
    head = ("<tr><th>slide</th><th>nuclei</th><th>tissue mm²</th><th>nuclei per mm²</th>"
            "<th>flagged chunks</th><th>minutes</th></tr>")  # fmt: skip
    body = [f"<h1>nucseg cohort report: {escape(out_dir.name)}</h1>",
            f"<p>{len(folders)} slides, {sum(int(a.size) for a in areas if hasattr(a, 'size'))}"
            " nuclei sampled for the areas (at most 20,000 a slide).</p>",
            "<table>" + head + "".join(rows) + "</table>"]  # fmt: skip
    if folders:
        plot = _cohort_plot(names, densities, areas)
        body += ["<h2>Density and size</h2>", f'<img alt="cohort plots" src="{plot}">']
    body += ["<h2>Thumbnails</h2>", "".join(pictures) or "<p>None.</p>"]
    return _page(f"nucseg cohort report: {out_dir.name}", body)


def write_cohort_report(out_dir: Any) -> Any:
    """Write (or rewrite, like ``slides.csv``) ``cohort.html`` in ``out_dir``; returns its path."""
    from pathlib import Path

    from nucseg.atomic import atomic_write

    path = Path(out_dir) / "cohort.html"
    text = cohort_report_html(out_dir)
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
