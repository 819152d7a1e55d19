#!/usr/bin/env python3
"""Generate apiserver-lite/src/openapi/extensions.json from upstream's OpenAPI schemas.

The Kubernetes vendor extensions (x-kubernetes-patch-merge-key, x-kubernetes-patch-strategy,
x-kubernetes-list-type, x-kubernetes-list-map-keys, x-kubernetes-map-type,
x-kubernetes-group-version-kind, x-kubernetes-unions, ...) are not carried by k8s-openapi's
schemars impls, so they are taken, machine-derived, from the JSON schemas that the PyPI package
`kubernetes-validate` ships (converted from upstream's swagger.json).

Output shape, sorted and compact:
    {"<definition>": {"x-…": …, "required": [...], "properties": {"<prop>": {"x-…": …}}}}
Definitions and properties without any x-kubernetes-* key (or upstream `required` list) are left
out. `required` is carried too because k8s-openapi's schemas differ from upstream there (it
requires every non-Option field, e.g. `name` of LocalObjectReference); the server takes upstream's
list, and none where upstream has none.

Usage: scripts/gen-openapi-extensions.py [--wheel PATH]
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "kubernetes-validate==1.37.0"
MEMBER = "kubernetes_validate/kubernetes-json-schema/v1.33.0-local/_definitions.json"
OUT = pathlib.Path(__file__).resolve().parent.parent / "apiserver-lite/src/openapi/extensions.json"


def x_keys(node):
    return {k: v for k, v in sorted(node.items()) if k.startswith("x-kubernetes-")}


def extract(defs):
    out = {}
    for name in sorted(defs):
        schema = defs[name]
        entry = x_keys(schema)
        if schema.get("required"):
            entry["required"] = schema["required"]
        props = {}
        for pname, pschema in sorted((schema.get("properties") or {}).items()):
            px = x_keys(pschema)
            if px:
                props[pname] = px
        if props:
            entry["properties"] = props
        if entry:
            out[name] = entry
    return out


def load_definitions(wheel):
    with zipfile.ZipFile(wheel) as zf:
        with zf.open(MEMBER) as f:
            return json.load(f)["$defs"]


def download_wheel(tmp):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
         "-d", tmp, PACKAGE],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wheels = sorted(pathlib.Path(tmp).glob("kubernetes_validate-*.whl"))
    if not wheels:
        sys.exit("pip download produced no kubernetes_validate wheel")
    return wheels[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", help="use an already downloaded wheel instead of pip download")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(tmp)
        defs = load_definitions(wheel)
    out = extract(defs)
    # One definition per line keeps diffs readable while staying compact.
    lines = [json.dumps(k) + ":" + json.dumps(v, sort_keys=True, separators=(",", ":"))
             for k, v in sorted(out.items())]
    text = "{\n" + ",\n".join(lines) + "\n}\n"
    pathlib.Path(args.out).write_text(text)
    print(f"{len(defs)} definitions read, {len(out)} with extensions written to {args.out}")


if __name__ == "__main__":
    main()
