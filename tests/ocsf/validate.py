"""Validates OCSF JSON lines against the official OCSF schema.

Usage: validate.py EVENTS.jsonl [--expect KIND,KIND,...]

Each line is checked against the JSON Schema that `ocsf-json-schema`
generates from the official OCSF schema export it ships (schema.ocsf.io's
`export/schema` of the version in the record's `metadata.version`), for the
record's class and the profiles in its `metadata.profiles`: required
attributes, enumerations (activity_id, type_uid, severity_id, ...), object
shapes, and no attribute the class does not define. On top of that,
`type_uid` must be `class_uid * 100 + activity_id`.

`--expect` names the Vigil event kinds (`unmapped.vigil.kind`) that must each
appear at least once. Exits 1 on any invalid record or missing kind.
"""

import argparse
import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("events")
    ap.add_argument("--expect", default="")
    args = ap.parse_args()

    schemas = {}
    validators = {}
    seen = {}
    errors = []
    with open(args.events, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    if not lines:
        print("no records", file=sys.stderr)
        return 1
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"line {n}: not JSON: {e}")
            continue
        kind = rec.get("unmapped", {}).get("vigil", {}).get("kind", "?")
        version = rec.get("metadata", {}).get("version")
        profiles = tuple(sorted(rec.get("metadata", {}).get("profiles", [])))
        if version not in schemas:
            try:
                schemas[version] = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
            except Exception as e:  # an unknown version is an invalid record
                errors.append(f"line {n} ({kind}): schema version {version!r}: {e}")
                continue
        key = (version, rec.get("class_uid"), profiles)
        if key not in validators:
            try:
                name = schemas[version].lookup_class_name_from_uid(rec.get("class_uid"))
                schema = schemas[version].get_class_schema(name, list(profiles))
            except Exception as e:
                errors.append(f"line {n} ({kind}): class_uid {rec.get('class_uid')!r}: {e}")
                continue
            validators[key] = jsonschema.Draft202012Validator(schema)
        problems = [
            f"{'/'.join(map(str, e.absolute_path)) or '(record)'}: {e.message}"
            for e in validators[key].iter_errors(rec)
        ]
        if rec.get("type_uid") != rec.get("class_uid", 0) * 100 + rec.get("activity_id", -1):
            problems.append("type_uid is not class_uid * 100 + activity_id")
        if problems:
            errors.append(f"line {n} ({kind}, class {rec.get('class_uid')}):\n    " + "\n    ".join(problems))
        else:
            seen[kind] = seen.get(kind, 0) + 1

    expected = [k for k in args.expect.split(",") if k]
    missing = [k for k in expected if k not in seen]
    for e in errors:
        print(f"invalid: {e}", file=sys.stderr)
    if missing:
        print(f"missing kinds: {', '.join(missing)}", file=sys.stderr)
    print(
        f"{len(lines)} records, {len(errors)} invalid; valid per kind: "
        + ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))
    )
    return 1 if errors or missing else 0


if __name__ == "__main__":
    sys.exit(main())
