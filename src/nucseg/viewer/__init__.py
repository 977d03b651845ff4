"""``nucseg view``: a local, read-only web viewer of a run's outputs.

The slide itself in deep zoom (tiles read on demand through :mod:`nucseg.slide.reader`), its
nuclei as outlines at high zoom and as a density map at low zoom (served per viewport from a
spatial index over ``nuclei.parquet``), the chunk quality flags, a click on a nucleus for its
measurements, a scale bar in microns. Modules: :mod:`.outputs` (what a folder holds),
:mod:`.tiles` (Deep Zoom), :mod:`.nuclei` (index and outlines), :mod:`.density`,
:mod:`.server` (standard-library HTTP server), :mod:`.assets` (OpenSeadragon, from npm). This
package sits above :mod:`nucseg.slide` and nothing below imports it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["serve", "start"]


def start(
    path: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    mpp: float | None = None,
    port: int = 0,
    tile_format: str = "jpeg",
    max_outlines: int = 20_000,
) -> tuple[Any, str]:
    """Check ``path``'s outputs, bind the server (not yet serving) and make the first slide
    ready (slide opened, overview read, nuclei indexed): ``(server, url)``.

    Raises
    ------
    FileNotFoundError, ValueError
        If the outputs, a slide they name, or OpenSeadragon is missing (one line each).
    OSError
        If ``port`` is taken.
    """
    from nucseg.viewer.outputs import find_items
    from nucseg.viewer.server import Viewer, make_server

    items = find_items(Path(path), source=source, mpp=mpp)
    viewer = Viewer(items, tile_format=tile_format, max_outlines=max_outlines)
    server = make_server(viewer, port=port)
    viewer.warm_all()  # the first slide ready before its address is given; the others after
    host, bound = server.server_address[:2]
    return server, f"http://{host}:{bound}/"


def serve(
    path: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    mpp: float | None = None,
    port: int = 0,
    tile_format: str = "jpeg",
    browser: bool = True,
    max_outlines: int = 20_000,
) -> None:
    """Start the viewer, print its address, open a browser tab, serve until interrupted."""
    server, url = start(path, source=source, mpp=mpp, port=port, tile_format=tile_format,
                        max_outlines=max_outlines)  # fmt: skip
    print(f"nucseg view: {url} (Ctrl-C to stop)", flush=True)
    if browser:
        import webbrowser

        try:
            webbrowser.open(url)
        except webbrowser.Error as err:
            print(f"nucseg: warning: no browser opened ({err}); open {url}", file=sys.stderr)
    try:
        server.serve_forever()
    finally:
        server.server_close()
