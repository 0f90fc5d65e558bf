"""KServe's InferenceService CRD schema (tests/data: the v1beta1 openAPIV3Schema of KServe
v0.15.2) as a check of a manifest, with the API server's strict field validation: a field the
CRD does not declare is an error, as ``kubectl apply`` reports it."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA = Path(__file__).parents[1] / "data" / "kserve-v0.15.2-inferenceservice-v1beta1.schema.yaml"


def _strict(node: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the fields (the API server's
    strict field validation; a structural schema prunes them silently otherwise)."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


@cache
def _validator() -> jsonschema.Draft7Validator:
    schema = yaml.load(SCHEMA.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    return jsonschema.Draft7Validator(_strict(schema))


def check(manifest: dict) -> None:
    """Raise ``jsonschema.ValidationError`` listing every problem, each named by its path."""
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        raise jsonschema.ValidationError(
            "; ".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
        )
