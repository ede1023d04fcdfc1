"""pytest plugin: runs a peer's own test suite against our drop-in.

    VR_PEER_ALIAS=pybreaker python -m pytest -p peer_alias PEER/tests

(with scripts/ on PYTHONPATH; scripts/peer_suites.sh does it) makes
``import pybreaker`` (and ``circuitbreaker``, ``aiolimiter``: a
comma-separated list) give ``virtrigaud_resilience.compat.<name>``, before
the peer's tests are collected. The peers' tests are not part of this
repository: fetch them (see docs/migrating.md).
"""

from __future__ import annotations

import importlib
import os
import sys

for _name in filter(None, os.environ.get("VR_PEER_ALIAS", "").split(",")):
    sys.modules[_name] = importlib.import_module(f"virtrigaud_resilience.compat.{_name}")
