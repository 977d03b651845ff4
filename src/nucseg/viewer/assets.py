"""Where the viewer's browser files are: its own (``static/``, in the package) and OpenSeadragon's.

OpenSeadragon (BSD-3-Clause, https://openseadragon.github.io) is not part of nucseg: ``make
install`` installs the version pinned in ``package.json`` from the npm registry into
``node_modules/`` (ignored by git). The viewer looks for its ``build/openseadragon`` folder in
``$NUCSEG_OPENSEADRAGON``, then in ``node_modules/`` of the checkout nucseg runs from.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["STATIC", "OpenSeadragonMissing", "openseadragon_folder"]

STATIC = Path(__file__).resolve().parent / "static"
_CHECKOUT = Path(__file__).resolve().parents[3]
_RELATIVE = Path("node_modules") / "openseadragon" / "build" / "openseadragon"


class OpenSeadragonMissing(FileNotFoundError):
    """OpenSeadragon's files are not installed."""


def openseadragon_folder() -> Path:
    """The folder holding ``openseadragon.min.js`` and ``images/``.

    Raises
    ------
    OpenSeadragonMissing
        With the one line that says how to install it.
    """
    given = os.environ.get("NUCSEG_OPENSEADRAGON")
    candidates = [Path(given)] if given else []
    candidates += [_CHECKOUT / _RELATIVE, Path.cwd() / _RELATIVE]
    for folder in candidates:
        if (folder / "openseadragon.min.js").is_file():
            return folder
    raise OpenSeadragonMissing(
        "the viewer needs OpenSeadragon, which is not installed: run `make install`, or "
        f"`npm ci` in {_CHECKOUT}, or set NUCSEG_OPENSEADRAGON to a folder holding "
        "openseadragon.min.js"
    )
