"""The viewer's local web server: the standard library's :class:`ThreadingHTTPServer` on
127.0.0.1, read-only, GET only.

Routes (``NAME`` is an :class:`~nucseg.viewer.outputs.Item`'s key):

- ``/`` the page, ``/static/...`` its script and style, ``/osd/...`` OpenSeadragon's files;
- ``/api/items``: the names and titles of what there is to show, and the first one's info;
- ``/api/NAME/info``: its size, mpp, nuclei, types, flagged chunks, density map's scale;
- ``/dzi/NAME.dzi`` and ``/dzi/NAME_files/LEVEL/COL_ROW.jpeg``: Deep Zoom tiles;
- ``/api/NAME/nuclei?x0=&y0=&x1=&y1=&tol=&limit=``: a viewport's outlines (binary, see
  :meth:`~nucseg.viewer.nuclei.NucleiLayer.outlines`);
- ``/api/NAME/at?x=&y=``: the nucleus under a level-0 point (JSON);
- ``/api/NAME/density.png``: nuclei per mm^2 as a colour map;
- ``/files/NAME/report.html``: the slide's report, if written.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from nucseg.viewer.assets import STATIC, openseadragon_folder
from nucseg.viewer.nuclei import MAX_OUTLINES, TYPE_NAMES
from nucseg.viewer.outputs import Item

log = logging.getLogger(__name__)

__all__ = ["Viewer", "make_server"]

_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
                 ".map": "application/json"}  # fmt: skip
_TILE = re.compile(
    r"^/dzi/(?P<name>[^/]+)_files/(?P<level>\d+)/(?P<col>\d+)_(?P<row>\d+)\.(?P<ext>\w+)$"
)  # noqa: E501


class Viewer:
    """The state the server answers from: the items, their tiles and nuclei (loaded lazily,
    once each)."""

    def __init__(
        self,
        items: list[Item],
        *,
        tile_format: str = "jpeg",
        quality: int = 80,
        max_outlines: int = MAX_OUTLINES,
    ) -> None:
        if max_outlines < 1:
            raise ValueError(f"--max-outlines must be at least 1, got {max_outlines}")
        self.items = {item.name: item for item in items}
        self.max_outlines = max_outlines
        self.tile_format, self.quality = tile_format, quality
        self.osd = openseadragon_folder()
        self._tiles: dict[str, Any] = {}
        self._nuclei: dict[str, Any] = {}
        self._density: dict[str, Any] = {}
        self._prefetching: set[str] = set()
        self._lock = threading.Lock()
        self._locks = {name: threading.RLock() for name in self.items}

    def tiles(self, name: str) -> Any:
        from nucseg.slide.reader import open_slide
        from nucseg.viewer.tiles import TileSource

        with self._locks[name]:
            if name not in self._tiles:
                reader = open_slide(self.items[name].slide)
                self._tiles[name] = TileSource(
                    reader, tile_format=self.tile_format, quality=self.quality
                )
            return self._tiles[name]

    def nuclei(self, name: str) -> Any:
        with self._locks[name]:
            if name not in self._nuclei:
                self._nuclei[name] = self.items[name].nuclei()
            return self._nuclei[name]

    def density(self, name: str) -> dict[str, Any]:
        """The density map of an item: PNG bytes and its scale (computed once)."""
        from nucseg.viewer.density import density_map

        nuclei = self.nuclei(name)
        with self._locks[name]:
            if name not in self._density:
                item = self.items[name]
                width, height = self.tiles_dimensions(name)
                self._density[name] = density_map(nuclei, (height, width), mpp=item.mpp)
            return self._density[name]

    def warm(self, name: str) -> None:
        """Open the slide, read its overview level, encode its coarse tiles, build the nuclei
        index and density map: what the page's first requests need."""
        self.tiles(name).slide.overview()
        self.tiles(name).warm()
        self.density(name)

    def prefetch(self, name: str) -> None:
        """Decode an item's outlines in a background thread, once: started when the page has
        had its first viewport, so that it does not slow the first tiles."""
        with self._lock:
            if name in self._prefetching:
                return
            self._prefetching.add(name)
        threading.Thread(target=self.nuclei(name).prefetch, daemon=True).start()

    def warm_all(self) -> threading.Thread:
        """Warm the first item now and the others in a background thread (returned)."""
        names = list(self.items)
        self.warm(names[0])

        def rest() -> None:
            for name in names[1:]:
                try:
                    self.warm(name)
                except (OSError, ValueError) as err:  # said again when the page asks for it
                    log.warning("%s: %s", name, err)

        thread = threading.Thread(target=rest, daemon=True)
        thread.start()
        return thread

    def tiles_dimensions(self, name: str) -> tuple[int, int]:
        return self.tiles(name).slide.dimensions

    def describe(self, name: str) -> dict[str, Any]:
        item = self.items[name]
        width, height = self.tiles_dimensions(name)
        nuclei = self.nuclei(name)
        density = self.density(name)
        has_report = (item.folder / "report.html").is_file() and item.kind == "slide"
        return {
            "name": name,
            "title": item.title,
            "kind": item.kind,
            "width": width,
            "height": height,
            "mpp": item.mpp,
            "nuclei": len(nuclei),
            "types": list(TYPE_NAMES) if nuclei.types is not None else None,
            "flags": list(item.flags),
            "density": {k: v for k, v in density.items() if k != "png"},
            "report": f"/files/{name}/report.html" if has_report else None,
            "max_outlines": self.max_outlines,
            "tiles": {"format": self.tile_format, "size": 254, "overlap": 1},
        }


class _Handler(BaseHTTPRequestHandler):
    server_version = "nucseg-view"
    protocol_version = "HTTP/1.1"  # keep-alive: the page's many tile requests reuse connections
    viewer: Viewer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            self._route(url.path, {k: v[-1] for k, v in parse_qs(url.query).items()})
        except (KeyError, ValueError) as err:
            self._send(HTTPStatus.NOT_FOUND, str(err).encode(), "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except OSError as err:  # a slide or output that cannot be read now: say it, go on
            log.warning("%s: %s", url.path, err)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, str(err).encode(), "text/plain")

    def _route(self, path: str, query: dict[str, str]) -> None:
        viewer = self.viewer
        if path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon", cache=True)
        if path in ("/", "/index.html"):
            return self._file(STATIC / "index.html")
        if path.startswith("/static/"):
            return self._file(_inside(STATIC, path[len("/static/") :]))
        if path.startswith("/osd/"):
            return self._file(_inside(viewer.osd, path[len("/osd/") :]), cache=True)
        if path == "/api/items":
            items = [{"name": name, "title": item.title} for name, item in viewer.items.items()]
            return self._json({"items": items, "first": viewer.describe(items[0]["name"])})
        tile = _TILE.match(path)
        if tile:
            source = viewer.tiles(_name(viewer, tile["name"]))
            level, col, row = (int(tile[k]) for k in ("level", "col", "row"))
            return self._send(HTTPStatus.OK, source.tile(level, col, row), source.mime, cache=True)
        if path.startswith("/dzi/") and path.endswith(".dzi"):
            source = viewer.tiles(_name(viewer, path[len("/dzi/") : -len(".dzi")]))
            return self._send(HTTPStatus.OK, source.dzi().encode(), "application/xml")
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "api":
            return self._api(_name(viewer, parts[1]), parts[2], query)
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "report.html":
            item = viewer.items[_name(viewer, parts[1])]
            return self._file(item.folder / "report.html")
        raise KeyError(f"no such page: {path}")

    def _api(self, name: str, what: str, query: dict[str, str]) -> None:
        viewer = self.viewer
        if what == "info":
            return self._json(viewer.describe(name))
        if what == "nuclei":
            box = tuple(float(query[k]) for k in ("x0", "y0", "x1", "y1"))
            tolerance = float(query.get("tol", 0))
            limit = min(int(query.get("limit", viewer.max_outlines)), viewer.max_outlines)
            data = viewer.nuclei(name).outlines(box, tolerance=tolerance, limit=limit)
            self._send(HTTPStatus.OK, data, "application/octet-stream")
            return viewer.prefetch(name)
        if what == "at":
            found = viewer.nuclei(name).at(float(query["x"]), float(query["y"]))
            return self._json({"nucleus": found})
        if what == "density.png":
            return self._send(HTTPStatus.OK, viewer.density(name)["png"], "image/png", cache=True)
        raise KeyError(f"no such request: {what}")

    def _json(self, value: Any) -> None:
        body = json.dumps(value, allow_nan=False, default=str).encode()
        self._send(HTTPStatus.OK, body, "application/json")

    def _file(self, path: Path, *, cache: bool = False) -> None:
        if not path.is_file():
            raise KeyError(f"no such file: {path.name}")
        mime = _STATIC_TYPES.get(path.suffix.lower(), "application/octet-stream")
        self._send(HTTPStatus.OK, path.read_bytes(), mime, cache=cache)

    def _send(self, status: int, body: bytes, mime: str, *, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-cache")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _name(viewer: Viewer, name: str) -> str:
    if name not in viewer.items:
        raise KeyError(f"no slide or image named {name!r}")
    return name


def _inside(folder: Path, relative: str) -> Path:
    """``folder / relative``, refused if it leaves ``folder``."""
    path = (folder / relative).resolve()
    if folder.resolve() not in path.parents:
        raise KeyError(f"no such file: {relative}")
    return path


def make_server(viewer: Viewer, *, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``viewer`` on 127.0.0.1 (``port`` 0: a free one, chosen by the system).

    Raises
    ------
    OSError
        If the port is taken.
    """
    handler = type("Handler", (_Handler,), {"viewer": viewer})
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as err:
        raise OSError(f"cannot listen on 127.0.0.1:{port}: {err.strerror or err}; give another "
                      "--port, or none for a free one") from None  # fmt: skip
    server.daemon_threads = True
    return server
