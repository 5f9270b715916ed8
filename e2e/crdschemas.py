"""The JSON schemas of the custom resources the manifests use (Flux, Argo CD, KEDA, ...), and a
validation of one object against its own.

The schemas come from $CRD_SCHEMAS_DIR (files `<group>/<kind>_<version>.json`), by default
../shared/schemas/crds beside the repository when it is there, else from the public CRDs catalog
when it can be reached; with neither, the test that asks skips and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path

import pytest
from rendering import REPO, Manifest

SCHEMAS = "CRD_SCHEMAS_DIR"
CATALOG = "https://raw.githubusercontent.com/datreeio/CRDs-catalog/main"


@cache
def schema_root() -> str:
    """Where the CRD schemas are read from: a directory, or the catalog's URL."""
    configured = os.environ.get(SCHEMAS)
    if configured:
        if not Path(configured).is_dir():
            pytest.fail(f"{SCHEMAS}={configured} is not a directory")
        return configured
    beside = REPO.parent / "shared" / "schemas" / "crds"
    if beside.is_dir():
        return str(beside)
    try:
        with urllib.request.urlopen(f"{CATALOG}/README.md", timeout=10):  # noqa: S310 (https)
            return CATALOG
    except (urllib.error.URLError, TimeoutError) as error:
        pytest.skip(
            f"no CRD schemas: {SCHEMAS} unset, no {beside}, and {CATALOG} unreachable ({error})"
        )


def is_custom(obj: Manifest) -> bool:
    """Whether `obj` is a custom resource: its API group has a dot and is not Kubernetes's own."""
    group = obj["apiVersion"].rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def schema_for(obj: Manifest) -> str:
    group, version = obj["apiVersion"].split("/")
    return f"{schema_root()}/{group}/{obj['kind'].lower()}_{version}.json"


def check_jsonschema() -> str:
    return str(Path(sys.executable).with_name("check-jsonschema"))


def crd_problem(obj: Manifest, scratch: Path) -> str:
    """Why `obj` is not valid against its CRD's schema; empty when it is."""
    instance = scratch / f"{obj['kind']}-{obj['metadata']['name']}.json"
    instance.write_text(json.dumps(obj), encoding="utf-8")
    done = subprocess.run(
        [check_jsonschema(), "--schemafile", schema_for(obj), str(instance)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return "" if done.returncode == 0 else f"{done.stdout}{done.stderr}"
