#!/usr/bin/env python3
"""Validates Kubernetes manifests against the API schema that PyPI's `kubernetes` client
carries in its models (openapi_types, attribute_map, required fields, enums), for
KubernetesManifestTests: Debian packages no kubeconform, and no cluster runs here.

    PYTHONPATH=<kubernetes client> kubernetes-schema.py FILE...

Each document must name a known apiVersion and kind; every field must exist in that kind's
schema with the right type (an unknown or misspelt field is an error, as `kubectl apply
--validate=strict` makes it); required fields must be there and enumerated fields take only
their values. Prints one `FILE: document N (Kind name): path: problem` line per problem and
exits 1, or `FILE: N documents valid` and exits 0.
"""
import re
import sys

import yaml
from kubernetes import client
from kubernetes.client import ApiClient

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float)}
# The client's container types (`List[V1ContainerPort]`, `Dict[str, str]`; older clients write
# `list[...]`, `dict(str, ...)`): pattern, Python type, name, and (path suffix, item) pairs.
CONTAINERS = [
    (r"[Ll]ist\[(.+)\]", list, "a list", lambda v: (("[%d]" % i, x) for i, x in enumerate(v))),
    (r"[Dd]ict[\[(]str, (.+)[\])]", dict, "a mapping", lambda v: ((".%s" % k, x) for k, x in v.items())),
]


def model_class(api_version, kind):
    """apps/v1 Deployment -> V1Deployment, v1 Service -> V1Service (the client's names)."""
    version = api_version.rpartition("/")[2]
    return getattr(client, version[:1].upper() + version[1:] + kind, None)


def check(value, type_name, path, problems):
    """Walks `value` against the client's type string (`V1Container`, `List[V1ContainerPort]`,
    `Dict[str, str]`, `str`, `object`...)."""
    if value is None:
        return
    for pattern, kind, name, items in CONTAINERS:
        match = re.fullmatch(pattern, type_name)
        if match:
            if not isinstance(value, kind):
                problems.append("%s: expected %s, got %r" % (path, name, value))
                return
            for suffix, item in items(value):
                check(item, match.group(1), path + suffix, problems)
            return
    if type_name == "object":
        return
    if type_name in PRIMITIVES:
        expected = PRIMITIVES[type_name]
        if not isinstance(value, expected) or (type_name != "bool" and isinstance(value, bool)):
            problems.append("%s: expected %s, got %r" % (path, type_name, value))
        return
    if type_name == "datetime":
        return
    model = getattr(client, type_name, None)
    if model is None:
        problems.append("%s: the client has no type %s" % (path, type_name))
        return
    if not isinstance(value, dict):
        problems.append("%s: expected a %s mapping, got %r" % (path, type_name, value))
        return
    fields = {json: python for python, json in model.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append("%s: unknown field '%s' in %s (known: %s)" % (path, key, type_name, known))
            continue
        check(item, model.openapi_types[fields[key]], "%s.%s" % (path, key), problems)


def validate(document):
    problems = []
    api_version, kind = document.get("apiVersion"), document.get("kind")
    model = model_class(api_version or "", kind or "") if api_version and kind else None
    if model is None:
        return ["no schema for apiVersion %r, kind %r" % (api_version, kind)]
    check(document, model.__name__, kind, problems)
    if not problems:
        # The models' constructors check required fields and enumerated values.
        try:
            ApiClient()._ApiClient__deserialize(document, model.__name__)
        except (ValueError, TypeError) as error:
            problems.append("%s: %s" % (kind, error))
    return problems


def main(paths):
    failed = False
    for path in paths:
        with open(path) as file:
            documents = [d for d in yaml.safe_load_all(file) if d is not None]
        for number, document in enumerate(documents, 1):
            name = (document.get("metadata") or {}).get("name", "?")
            for problem in validate(document):
                failed = True
                print("%s: document %d (%s %s): %s" % (path, number, document.get("kind"), name, problem))
        if not failed:
            print("%s: %d documents valid" % (path, len(documents)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
