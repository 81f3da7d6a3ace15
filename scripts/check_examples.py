#!/usr/bin/env python3
"""Validates every example in an OpenAPI 3.1 document against the schema it illustrates.

Schema `example`/`examples`, media-type `example`/`examples` and parameter examples are each
checked with JSON Schema 2020-12 (formats included), `$ref`s resolved in the document itself.
Exits non-zero naming every example that does not validate.
"""

import json
import sys

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:telemental:openapi"


def pointer(parts):
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def main(path):
    doc = json.load(open(path))
    registry = Registry().with_resource(DOC_URI, Resource(doc, specification=DRAFT202012))
    checked, bad = 0, []

    def check(schema_path, example, where):
        nonlocal checked
        validator = Draft202012Validator(
            {"$ref": f"{DOC_URI}#{pointer(schema_path)}"},
            registry=registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        errors = sorted(validator.iter_errors(example), key=lambda e: list(e.path))
        checked += 1
        for e in errors:
            bad.append(f"{where}: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}")

    def walk(node, parts):
        if isinstance(node, dict):
            in_schema = "schemas" in parts or "schema" in parts or "properties" in parts
            # A schema's own examples (components, properties, items, ...).
            if in_schema and ("type" in node or "$ref" in node or "oneOf" in node or "enum" in node):
                if "example" in node:
                    check(parts, node["example"], pointer(parts) + "/example")
                for i, ex in enumerate(node.get("examples", []) if isinstance(node.get("examples"), list) else []):
                    check(parts, ex, pointer(parts) + f"/examples/{i}")
            # Media types and parameters: examples of their `schema`.
            if "schema" in node and isinstance(node["schema"], dict):
                if "example" in node:
                    check(parts + ["schema"], node["example"], pointer(parts) + "/example")
                if isinstance(node.get("examples"), dict):
                    for name, ex in node["examples"].items():
                        if isinstance(ex, dict) and "value" in ex:
                            check(parts + ["schema"], ex["value"], pointer(parts) + f"/examples/{name}")
            for k, v in node.items():
                if k not in ("example", "examples"):
                    walk(v, parts + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, parts + [i])

    walk(doc, [])
    for line in bad:
        print("invalid example:", line)
    print(f"{checked} examples checked, {len(bad)} invalid")
    if checked == 0 or bad:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "openapi/openapi.json")
