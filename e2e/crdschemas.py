"""The JSON schemas of the custom resources the manifests use (Flux, Argo CD, KEDA, ...), and a
validation of one object against its own.

The schemas come from $CRD_SCHEMAS_DIR (files `<group>/<kind>_<version>.json`), by default
../shared/schemas/crds beside the repository when it is there, else from the public CRDs catalog
at the commit in scripts/crds-catalog when it can be reached; with neither, the test that asks
skips and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path

import pytest
import yaml
from rendering import REPO, Manifest

SCHEMAS = "CRD_SCHEMAS_DIR"
# Schemas (`<group>/<kind>_<version>.json`, space-separated) that the machine's schema directory is
# known to lack: their resources are skipped, and CI accepts that skip (testing/skippolicy.py).
MISSING = "CRD_SCHEMAS_MISSING"
# The public catalog at one commit, as scripts/validate.sh reads it (docs/testing.md: the bump).
CATALOG = (REPO / "scripts" / "crds-catalog").read_text(encoding="utf-8").strip()


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


def _schema_text(schema: str) -> str:
    if schema.startswith("https://"):
        with urllib.request.urlopen(schema, timeout=30) as reply:  # noqa: S310 (https)
            return str(reply.read().decode())
    if not Path(schema).is_file():
        relative = str(Path(schema).relative_to(schema_root()))
        if relative in os.environ.get(MISSING, "").split():
            pytest.skip(
                f"no CRD schema {relative}: CRD_SCHEMAS_MISSING says this machine's copy lacks it"
            )
        pytest.skip(f"no CRD schema {schema} (add it to {SCHEMAS} or reach {CATALOG})")
    return Path(schema).read_text(encoding="utf-8")


def _python_pattern(pattern: str) -> str:
    """A pattern of Go's regexp as Python's `re` reads it: Go takes an inline flag anywhere (the
    Prometheus Operator's `^(?i)(abort|warn)?$`), Python only at the start, where it means the
    same for a flag that applies to the whole pattern."""
    if "(?i)" in pattern and not pattern.startswith("(?i)"):
        return "(?i)" + pattern.replace("(?i)", "")
    return pattern


def _loadable(node: object) -> object:
    if isinstance(node, dict):
        return {
            key: _python_pattern(value) if key == "pattern" and isinstance(value, str)
            else _loadable(value)
            for key, value in node.items()
        }  # fmt: skip
    if isinstance(node, list):
        return [_loadable(item) for item in node]
    return node


def crd_problem(obj: Manifest, scratch: Path, schema_at: str | None = None) -> str:
    """Why `obj` is not valid against its CRD's schema (`schema_at`, by default its own in
    schema_root()); empty when it is. The schema's patterns are read as Go reads them (the API
    server is Go), with Python's regex dialect."""
    instance = scratch / f"{obj['kind']}-{obj['metadata']['name']}.json"
    instance.write_text(json.dumps(obj), encoding="utf-8")
    schema = scratch / f"{obj['kind']}-{obj['metadata']['name']}.schema.json"
    schema.write_text(
        json.dumps(_loadable(json.loads(_schema_text(schema_at or schema_for(obj))))), "utf-8"
    )
    done = subprocess.run(
        [check_jsonschema(), "--regex-variant", "python", "--schemafile", str(schema),
         str(instance)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    return "" if done.returncode == 0 else f"{done.stdout}{done.stderr}"


def main(schema: str, path: str) -> int:
    """scripts/validate.sh: `crdschemas.py SCHEMA OBJECT.yaml` says what is wrong with one object;
    exit 1 if anything is."""
    obj = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as scratch:
        try:
            problem = crd_problem(obj, Path(scratch), schema)
        except pytest.skip.Exception as skipped:
            print(f"skip: {skipped.msg}")
            return 0
        except (urllib.error.URLError, TimeoutError) as error:
            print(f"cannot read the schema {schema}: {error}")
            return 1
    print(problem, end="")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
