#!/usr/bin/env python3
"""Validates FHIR R4 JSON resources written by the tests (target/fhir-samples/*.json).

Two layers:
1. fhirclient 4.x (strict R4 4.0.1 models): every element is known for its type (no
   superfluous entries), required elements (1..1, 1..*) are present, lists are lists and single
   elements single, JSON types match (string, bool, int, decimal), primitive formats of
   date/dateTime/instant match the R4 regexes, and nested datatypes (Coding, ContactPoint,
   Duration, Reference, Period, Extension.value[x], Bundle entries' resources) recursively.
2. What fhirclient does not check, added here: FHIR JSON rules (no null, no empty string,
   array or object), the codes of the REQUIRED value-set bindings of the elements this service
   emits, id/uri/code primitive formats, an extension carries a value or sub-extensions but not
   both, and every Coding has a system and a code.

Usage: fhir-validate.py DIR            validate every *.json in DIR (exit 1 on any error)
       fhir-validate.py --self-test DIR  also prove that broken variants of the samples fail
"""
import copy
import json
import pathlib
import re
import sys

from fhirclient.models.fhirabstractbase import FHIRValidationError
from fhirclient.models.fhirelementfactory import FHIRElementFactory

# Required bindings (R4 4.0.1) of the elements the service emits: path -> allowed codes.
# A path is the resource type, then element names; arrays are walked through.
REQUIRED = {
    "CarePlan.status": {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
    "CarePlan.intent": {"proposal", "plan", "order", "option"},
    "CarePlan.activity.detail.status": {"not-started", "scheduled", "in-progress", "on-hold", "completed",
                                        "cancelled", "stopped", "unknown", "entered-in-error"},
    "CarePlan.activity.detail.kind": {"Appointment", "CommunicationRequest", "DeviceRequest", "MedicationRequest",
                                      "NutritionOrder", "Task", "ServiceRequest", "VisionPrescription"},
    "ServiceRequest.status": {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
    "ServiceRequest.intent": {"proposal", "plan", "directive", "order", "original-order", "reflex-order",
                              "filler-order", "instance-order", "option"},
    "ServiceRequest.priority": {"routine", "urgent", "asap", "stat"},
    "Appointment.status": {"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow",
                           "entered-in-error", "checked-in", "waitlist"},
    "Appointment.participant.status": {"accepted", "declined", "tentative", "needs-action"},
    "Appointment.participant.required": {"required", "optional", "information-only"},
    "Bundle.type": {"document", "message", "transaction", "transaction-response", "batch", "batch-response",
                    "history", "searchset", "collection"},
    "Bundle.entry.search.mode": {"match", "include", "outcome"},
    "OperationOutcome.issue.severity": {"fatal", "error", "warning", "information"},
    "OperationOutcome.issue.code": {
        "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown", "expired",
        "forbidden", "suppressed", "processing", "not-supported", "duplicate", "multiple-matches", "not-found",
        "deleted", "too-long", "code-invalid", "extension", "too-costly", "business-rule", "conflict",
        "transient", "lock-error", "no-store", "exception", "timeout", "incomplete", "throttled",
        "informational"},
    "CapabilityStatement.status": {"draft", "active", "retired", "unknown"},
    "CapabilityStatement.kind": {"instance", "capability", "requirements"},
    "CapabilityStatement.fhirVersion": {"4.0.1"},
    "CapabilityStatement.rest.mode": {"client", "server"},
    "CapabilityStatement.rest.resource.interaction.code": {"read", "vread", "update", "patch", "delete",
                                                           "history-instance", "history-type", "create",
                                                           "search-type"},
    "CapabilityStatement.rest.resource.versioning": {"no-version", "versioned", "versioned-update"},
    "CapabilityStatement.rest.resource.conditionalRead": {"not-supported", "modified-since", "not-match",
                                                          "full-support"},
    "CapabilityStatement.rest.resource.searchParam.type": {"number", "date", "string", "token", "reference",
                                                           "composite", "quantity", "uri", "special"},
    "CapabilityStatement.rest.resource.type": None,  # any resource type; checked below
}
# Bindings on datatypes, wherever they appear.
DATATYPE_REQUIRED = {
    "ContactPoint.system": {"phone", "fax", "email", "pager", "url", "sms", "other"},
    "ContactPoint.use": {"home", "work", "temp", "old", "mobile"},
    "Bundle.link.relation": None,
}
ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}")
URI = re.compile(r"\S+")
CODE = re.compile(r"[^\s]+( [^\s]+)*")
PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
PARTICIPATION_CODES = {"ELECTRONIC", "PHYSICAL", "REMOTE", "VERBAL", "DICTATE", "FACE", "PHONE", "VIDEOCONF",
                       "WRITTEN", "FAXWRIT", "HANDWRIT", "MAILWRIT", "ONLINEWRIT", "EMAILWRIT", "TYPEWRIT"}


def json_rules(value, path, errors):
    """No null, no empty string/array/object anywhere."""
    if value is None:
        errors.append(f"{path}: null is not allowed in FHIR JSON")
    elif isinstance(value, str) and value == "":
        errors.append(f"{path}: empty string is not allowed")
    elif isinstance(value, list):
        if not value:
            errors.append(f"{path}: empty array is not allowed")
        for i, v in enumerate(value):
            json_rules(v, f"{path}[{i}]", errors)
    elif isinstance(value, dict):
        if not value:
            errors.append(f"{path}: empty object is not allowed")
        for k, v in value.items():
            json_rules(v, f"{path}.{k}", errors)


def walk(value, dotted):
    """Yields (path, value) for every node reached by dotted element names (through arrays)."""
    parts = dotted.split(".")
    nodes = [(parts[0], value)]
    for name in parts[1:]:
        nxt = []
        for p, v in nodes:
            for item in (v if isinstance(v, list) else [v]):
                if isinstance(item, dict) and name in item:
                    nxt.append((f"{p}.{name}", item[name]))
        nodes = nxt
    for p, v in nodes:
        for i, item in enumerate(v if isinstance(v, list) else [v]):
            yield (p if not isinstance(v, list) else f"{p}[{i}]"), item


def resources_in(resource):
    """The resource and any resources inside it (Bundle entries)."""
    yield resource
    for entry in resource.get("entry", []) if resource.get("resourceType") == "Bundle" else []:
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            yield from resources_in(entry["resource"])


def semantic_rules(resource, errors):
    for res in resources_in(resource):
        rtype = res.get("resourceType")
        if "id" in res and not (isinstance(res["id"], str) and ID.fullmatch(res["id"])):
            errors.append(f"{rtype}.id: {res['id']!r} is not a FHIR id")
        for dotted, allowed in REQUIRED.items():
            if not dotted.startswith(rtype + ".") or allowed is None:
                continue
            for path, v in walk(res, dotted):
                if v not in allowed:
                    errors.append(f"{path}: {v!r} is not in the required value set")
        if rtype == "CapabilityStatement":
            for path, v in walk(res, "CapabilityStatement.rest.resource.type"):
                if not FHIRElementFactory.instantiate(v, None).__class__.__name__ == v:
                    errors.append(f"{path}: {v!r} is not an R4 resource type")
        check_datatypes(res, rtype, errors)


def check_datatypes(value, path, errors):
    """Bindings and formats of datatypes wherever they occur, found by shape."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_datatypes(v, f"{path}[{i}]", errors)
        return
    if not isinstance(value, dict):
        return
    if "url" in value and ("extension" in value or any(k.startswith("value") for k in value)):
        # An Extension: a uri, and a value or sub-extensions, never both.
        has_value = any(k.startswith("value") for k in value)
        if has_value and "extension" in value:
            errors.append(f"{path}: an extension has a value or sub-extensions, not both")
        if not URI.fullmatch(str(value["url"])):
            errors.append(f"{path}.url: not a uri")
    if "system" in value and "code" in value and isinstance(value.get("code"), str):
        # A Coding.
        if not CODE.fullmatch(value["code"]):
            errors.append(f"{path}.code: {value['code']!r} is not a FHIR code")
        if value["system"] == PARTICIPATION_MODE and value["code"] not in PARTICIPATION_CODES:
            errors.append(f"{path}.code: {value['code']!r} is not a v3 ParticipationMode code")
    if "coding" in value and isinstance(value["coding"], list):
        for i, c in enumerate(value["coding"]):
            if isinstance(c, dict) and not ("system" in c and "code" in c):
                errors.append(f"{path}.coding[{i}]: a coding needs system and code")
    if "system" in value and "value" in value and isinstance(value.get("value"), str):
        # A ContactPoint.
        for key in ("system", "use"):
            allowed = DATATYPE_REQUIRED[f"ContactPoint.{key}"]
            if key in value and value[key] not in allowed:
                errors.append(f"{path}.{key}: {value[key]!r} is not a ContactPoint {key}")
    for k, v in value.items():
        if k != "resource" or not isinstance(v, dict):
            check_datatypes(v, f"{path}.{k}", errors)


def flatten(err, prefix=""):
    if isinstance(err, FHIRValidationError):
        out = []
        for e in err.errors:
            p = ".".join(x for x in [prefix, err.path or ""] if x)
            out.extend(flatten(e, p))
        return out or [f"{prefix}: {err}"]
    return [f"{prefix}: {err}" if prefix else str(err)]


def validate(resource):
    """Every error found in one resource, as strings."""
    errors = []
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return ["not a FHIR resource (no resourceType)"]
    json_rules(resource, resource["resourceType"], errors)
    try:
        # strict=True: raises on any structural error, with all of them collected.
        FHIRElementFactory.instantiate(resource["resourceType"], resource)
    except FHIRValidationError as e:
        errors.extend(flatten(e, resource["resourceType"]))
    except Exception as e:  # an unknown resourceType, a wrong JSON type at the top
        errors.append(f"{resource['resourceType']}: {e}")
    semantic_rules(resource, errors)
    return errors


def breakages(resource):
    """Variants of a sample that a validator must refuse, one mapping mistake each."""
    rtype = resource["resourceType"]
    out = []

    def variant(name, change):
        r = copy.deepcopy(resource)
        try:
            change(r)
        except (KeyError, IndexError, TypeError):
            return  # the sample lacks the element this breakage needs
        out.append((name, r))

    variant("unknown element", lambda r: r.__setitem__("modality", "video"))
    variant("null element", lambda r: r.__setitem__("language", None))
    variant("empty array", lambda r: r.__setitem__("extension", []))
    if rtype in ("CarePlan", "ServiceRequest"):
        variant("missing required status", lambda r: r.pop("status"))
        variant("missing required subject", lambda r: r.pop("subject"))
        variant("status outside the required value set", lambda r: r.__setitem__("status", "requested"))
        variant("subject not a Reference", lambda r: r.__setitem__("subject", "Patient/1"))
        variant("a list element given as one", lambda r: r.__setitem__("category", {"text": "x"})
                if rtype == "CarePlan" else r.__setitem__("reasonCode", {"text": "x"}))
        variant("a bad dateTime", lambda r: r.__setitem__("created" if rtype == "CarePlan" else "authoredOn",
                                                          "29/11/2026"))
        variant("an extension with value and sub-extensions",
                lambda r: r.__setitem__("extension", [{"url": "https://x/y", "valueCode": "a",
                                                        "extension": [{"url": "b", "valueCode": "c"}]}]))
        variant("a ContactPoint system outside the value set",
                lambda r: r.__setitem__("extension", [{"url": "https://x/y",
                                                        "valueContactPoint": {"system": "telephone", "value": "1"}}]))
    if rtype == "ServiceRequest":
        variant("priority outside the required value set", lambda r: r.__setitem__("priority", "emergency"))
        variant("an unknown ParticipationMode code",
                lambda r: r["orderDetail"][0]["coding"][0].__setitem__("code", "F2F"))
    if rtype == "Bundle":
        variant("a bad Bundle.type", lambda r: r.__setitem__("type", "search"))
        variant("total as a string", lambda r: r.__setitem__("total", "2"))
    if rtype == "OperationOutcome":
        variant("issue without code", lambda r: r["issue"][0].pop("code"))
        variant("an issue code outside the value set", lambda r: r["issue"][0].__setitem__("code", "not-allowed"))
    if rtype == "CapabilityStatement":
        variant("another fhirVersion", lambda r: r.__setitem__("fhirVersion", "4.0"))
        variant("missing date", lambda r: r.pop("date"))
    return out


def main(argv):
    self_test = "--self-test" in argv
    dirs = [a for a in argv if not a.startswith("--")]
    if len(dirs) != 1:
        print(__doc__)
        return 2
    files = sorted(pathlib.Path(dirs[0]).glob("*.json"))
    if not files:
        print(f"fhir-validate: no samples in {dirs[0]}: did the tests run?")
        return 1
    failed = 0
    kinds = {}
    for f in files:
        resource = json.loads(f.read_text())
        kinds[resource.get("resourceType")] = kinds.get(resource.get("resourceType"), 0) + 1
        errors = validate(resource)
        if errors:
            failed += 1
            print(f"INVALID {f.name}")
            for e in errors:
                print(f"    {e}")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    print(f"fhir-validate: {len(files) - failed} valid, {failed} invalid ({summary})")
    if self_test:
        caught = missed = 0
        seen = set()
        for f in files:
            resource = json.loads(f.read_text())
            for name, broken in breakages(resource):
                key = (resource["resourceType"], name)
                if key in seen:
                    continue
                seen.add(key)
                if validate(broken):
                    caught += 1
                else:
                    missed += 1
                    print(f"SELF-TEST MISSED: {resource['resourceType']} with {name} ({f.name})")
        print(f"fhir-validate self-test: {caught} broken variants refused, {missed} accepted")
        if missed or not caught:
            return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
