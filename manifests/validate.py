#!/usr/bin/env python3
"""Validates rendered Kubernetes objects offline, as the API server's schema
would, and fails on any object it has no schema for.

  built-in kinds    kubernetes-validate (PyPI), strict (unknown fields are
                    errors, as with kubectl's default --validate=strict),
                    against KUBERNETES_VERSION
  PodMonitor, ServiceMonitor, PrometheusRule
                    the openAPIV3Schema of their CustomResourceDefinitions in
                    manifests/schemas/ (origin and licences in its README),
                    also strict: objects without x-kubernetes-preserve-unknown-
                    fields reject fields their schema does not declare

Usage: validate.py [FILE]   (a JSON array of objects, as `render.py --json`
                             prints; stdin when no FILE)
Prints one line per object and "validated N objects" at the end; exits 1 if
any object failed.
"""

import copy
import glob
import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

# The oldest Kubernetes minor these manifests promise to work on; AKS
# supports it, and every field used here is GA in it.
KUBERNETES_VERSION = "1.33.0"
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas")


def strict(schema):
    """Copy of an OpenAPI schema where every object that lists its properties
    and does not preserve unknown fields rejects undeclared ones."""
    schema = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def load_crd_schemas():
    """(apiVersion, kind) -> validator, for every served version of every
    CRD in schemas/."""
    validators = {}
    for path in sorted(glob.glob(os.path.join(SCHEMA_DIR, "*.yaml"))):
        with open(path, encoding="utf-8") as stream:
            for crd in yaml.safe_load_all(stream):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group = crd["spec"]["group"]
                kind = crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    if not version.get("served", True):
                        continue
                    schema = strict(version["schema"]["openAPIV3Schema"])
                    validators[(f"{group}/{version['name']}", kind)] = (
                        jsonschema.Draft7Validator(schema),
                        os.path.basename(path),
                    )
    return validators


def describe(obj):
    metadata = obj.get("metadata", {})
    namespace = metadata.get("namespace")
    name = metadata.get("name", "?")
    return f"{obj.get('apiVersion')} {obj.get('kind')} {namespace + '/' if namespace else ''}{name}"


def validate(objects, crd_validators):
    failures = 0
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in crd_validators:
            validator, origin = crd_validators[key]
            errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
            for error in errors:
                path = ".".join(str(p) for p in error.path) or "(root)"
                print(f"FAIL {describe(obj)}: {path}: {error.message} [CRD schema {origin}]")
            if errors:
                failures += 1
            else:
                print(f"ok   {describe(obj)} [CRD schema {origin}]")
            continue
        try:
            version = kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            print(f"ok   {describe(obj)} [Kubernetes {version} strict]")
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path) or "(root)"
            print(f"FAIL {describe(obj)}: {path}: {error.message} [Kubernetes {error.version} strict]")
            failures += 1
        except kubernetes_validate.SchemaNotFoundError as error:
            print(f"FAIL {describe(obj)}: no schema: {error.message}")
            failures += 1
    return failures


def main(argv):
    if len(argv) > 1:
        print(__doc__, file=sys.stderr)
        return 2
    text = open(argv[0], encoding="utf-8").read() if argv else sys.stdin.read()
    objects = json.loads(text)
    if not isinstance(objects, list):
        print("validate.py: expected a JSON array of objects", file=sys.stderr)
        return 2
    failures = validate(objects, load_crd_schemas())
    print(f"validated {len(objects)} objects, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
