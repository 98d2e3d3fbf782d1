"""Which sn40l a process runs: a digest of the package's Python source, so a driver can refuse
socket actors that run other code than it does.

Two ways to get there silently: Ray's workers import packages from the driver's working
directory first, so a driver started inside a source checkout gets socket actors running that
checkout whatever is installed; and the hosts of a multi-host Ray cluster may have different
versions installed. Either way the CLI would report numbers from code it is not running.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 (first 16 hex digits) over the relative path and bytes of every ``.py`` file
    of this sn40l package, in path order. Data files are left out: the hardware profile a
    socket models travels with the cluster's spec."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def provenance() -> dict:
    """This process's sn40l: the code digest and where the package was imported from."""
    return {"code": code_digest(), "code_dir": str(PACKAGE_DIR)}
