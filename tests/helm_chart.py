"""The Helm chart (helm/df-supernode) rendered by the real Helm engine (helm-python-sdk, Helm v4's Go SDK).

Also the one place that derives the chart's `config` schema from app.core.config.Settings:
``python -m tests.helm_chart`` rewrites that part of values.schema.json after a setting was added.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import helm_python
import yaml

from app.core.config import Settings

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "df-supernode"
SCHEMA = CHART / "values.schema.json"
VALUES_DIR = REPO / "tests" / "helm_values"
# Two Kubernetes versions the installed kubernetes-validate ships schemas for: the oldest still common in
# production and a recent one.
KUBE_VERSIONS = ("1.29.0", "1.31.0")

# Settings holding credentials (or URLs that may carry one): only ever from a Secret, never in `config`.
SECRET_SETTINGS = frozenset(
    {
        "api_tokens",
        "harbor_webhook_secret",
        "harbor_registry_username",
        "harbor_registry_password",
        "redis_url",
        "broker_url",
        "database_url",
    }
)
# Settings the chart sets itself from other values (the volume, the listen address, the drain).
CHART_SETTINGS = frozenset({"listen", "seed_dir", "drain_seconds", "shutdown_timeout_seconds"})


def render(
    values: dict[str, Any] | None = None, *, name: str = "df", namespace: str = "dragonfly", is_upgrade: bool = False
) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), exactly as `helm template` would give."""
    chart = helm_python.Chart.load(CHART)
    return chart.render(values or {}, name=name, namespace=namespace, is_install=not is_upgrade, is_upgrade=is_upgrade)


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render, NOTES.txt left out."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def load_values(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((VALUES_DIR / name).read_text())
    return loaded


def _json_type(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _json_type(inner[0])
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    return "string"  # str, Path


def settings_schema() -> dict[str, Any]:
    """The JSON schema of `config`: one property per settable Settings field, nothing else allowed."""
    properties: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        if name in SECRET_SETTINGS or name in CHART_SETTINGS:
            continue
        prop: dict[str, Any] = {"type": _json_type(field.annotation)}
        for bound in field.metadata:
            for attr, key in (
                ("ge", "minimum"),
                ("gt", "exclusiveMinimum"),
                ("le", "maximum"),
                ("lt", "exclusiveMaximum"),
            ):
                if getattr(bound, attr, None) is not None:
                    prop[key] = getattr(bound, attr)
        if field.description:
            prop["description"] = f"DF_{name.upper()}: {field.description}"
        properties[name] = prop
    return {"type": "object", "additionalProperties": False, "properties": properties}


def write_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    schema["properties"]["config"] = settings_schema()
    SCHEMA.write_text(json.dumps(schema, indent=2) + "\n")


def values_table() -> list[str]:
    """The chart README's values table, from values.yaml: one row per leaf key, its default, and its
    inline comment (or the first sentence of the comment above it). The README must carry it verbatim."""
    rows = ["| Key | Default | Description |", "| --- | --- | --- |"]
    path: list[tuple[int, str]] = []
    comment: list[str] = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            comment = [] if text.startswith("---") else [*comment, text]
            continue
        if not stripped or stripped.startswith("- ") or ":" not in stripped:
            if not stripped:
                comment = []
            continue
        key, _, rest = stripped.partition(":")
        while path and path[-1][0] >= indent:
            path.pop()
        value, _, inline = rest.partition(" #")
        value = value.strip()
        following = next((n for n in lines[index + 1 :] if n.strip() and not n.strip().startswith("#")), "")
        nested = not value and len(following) - len(following.lstrip()) > indent
        if nested and not following.strip().startswith("- "):
            path.append((indent, key))
            comment = []
            continue
        full = ".".join([*(name for _, name in path), key])
        default = value or "(list, see values.yaml)"
        block = " ".join(comment)
        description = inline.strip() or (block.split(". ")[0].rstrip(".") + "." if block else "")
        cells = (default.replace("|", r"\|"), description.replace("|", r"\|"))
        rows.append(f"| `{full}` | `{cells[0]}` | {cells[1]} |")
        comment = []
    return rows


README = CHART / "README.md"
TABLE_MARK = "<!-- values table: generated from values.yaml by python -m tests.helm_chart -->"


def write_readme_table() -> None:
    head = README.read_text().split(TABLE_MARK)[0]
    README.write_text(head + TABLE_MARK + "\n" + "\n".join(values_table()) + "\n")


if __name__ == "__main__":
    write_schema()
    write_readme_table()
    print(
        f"wrote the config part of {SCHEMA.relative_to(REPO)} and the values table of {README.relative_to(REPO)}",
        file=sys.stderr,
    )
