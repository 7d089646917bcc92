"""The live limits and their bounds (pure). The API validates with app.limits.views (same bounds)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from app.core.config import Settings

# Wire name -> (attribute, smallest, largest). Bounds keep a typo from stalling or flooding the cluster.
FIELDS: dict[str, tuple[str, int, int]] = {
    "downLinkKiB": ("down_link_kib", 0, 10 * 1024 * 1024),
    "seedUploadKiBps": ("seed_upload_kibps", 0, 100 * 1024 * 1024),
    "peerDownLimit": ("peer_down_limit", 1, 64),
    "peerUpLimit": ("peer_up_limit", 1, 1000),
    "cdnLoadLimit": ("cdn_load_limit", 1, 10_000),
}


@dataclass(frozen=True)
class Limits:
    down_link_kib: int
    seed_upload_kibps: int
    peer_down_limit: int
    peer_up_limit: int
    cdn_load_limit: int

    @classmethod
    def defaults(cls, settings: Settings) -> Limits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def with_overrides(self, overrides: dict[str, int]) -> Limits:
        return replace(self, **{FIELDS[name][0]: value for name, value in overrides.items() if name in FIELDS})

    def as_wire(self) -> dict[str, int]:
        return {name: getattr(self, attr) for name, (attr, _, _) in FIELDS.items()}

    def seed_upload_share_kibps(self, live_replicas: int) -> int:
        """One replica's part of the seed-cache upload bandwidth (0 = unlimited)."""
        if self.seed_upload_kibps == 0:
            return 0
        return max(1, self.seed_upload_kibps // max(1, live_replicas))


def parse_stored(raw: dict[str, str]) -> dict[str, int]:
    """Overrides as kept in Redis; a value that is not a valid number is ignored (the setting applies)."""
    out: dict[str, int] = {}
    for name, text in raw.items():
        if name not in FIELDS:
            continue
        try:
            value = int(text)
        except ValueError:
            continue
        _, low, high = FIELDS[name]
        if low <= value <= high:
            out[name] = value
    return out
