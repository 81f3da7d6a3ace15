#!/usr/bin/env python3
"""Validates every webhook body the tests received against its event's schema.

The integration tests keep every delivery they receive under target/webhook-samples/ (see
tests/api/webhooks.rs). Each is checked with JSON Schema 2020-12 (formats included) against the
request body schema of its event type under the OpenAPI document's `webhooks`. Fails when a
sample does not validate, when its type is not documented, or when a documented event type has
no sample (so every event's payload is checked on every run).

Usage: check_webhook_samples.py openapi/openapi.json target/webhook-samples
"""

import json
import pathlib
import sys

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:telemental:openapi"


def main(doc_path, samples_dir):
    doc = json.load(open(doc_path))
    registry = Registry().with_resource(DOC_URI, Resource(doc, specification=DRAFT202012))
    hooks = doc.get("webhooks", {})
    if not hooks:
        sys.exit("the document has no webhooks")
    seen, bad, checked = set(), [], 0
    for path in sorted(pathlib.Path(samples_dir).glob("*.json")):
        body = json.loads(path.read_text())
        kind = body.get("type")
        hook = hooks.get(kind)
        if hook is None:
            bad.append(f"{path.name}: event type {kind!r} is not documented")
            continue
        schema = hook["post"]["requestBody"]["content"]["application/json"]["schema"]
        validator = Draft202012Validator(
            {"$ref": DOC_URI + "#/webhooks/" + kind.replace("~", "~0").replace("/", "~1")
             + "/post/requestBody/content/application~1json/schema"},
            registry=registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        assert schema  # the pointer above names it
        for e in validator.iter_errors(body):
            bad.append(f"{path.name}: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}")
        seen.add(kind)
        checked += 1
    for kind in hooks:
        if kind not in seen:
            bad.append(f"no sample of {kind}: the tests must receive one of each event type")
    for b in bad:
        print(b)
    print(f"{checked} webhook bodies checked against {len(hooks)} documented event types; "
          f"{len(bad)} problems")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main(*sys.argv[1:3])
