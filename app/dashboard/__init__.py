"""The operations dashboard (issue 8): static HTML, CSS and ES modules served at ``/dashboard`` as
package data. It is a client of the public REST API only (``/api/v1/...``); see app/api/routes/dashboard.py."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
