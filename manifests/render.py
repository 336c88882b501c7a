#!/usr/bin/env python3
"""Builds a kustomization the way `kustomize build` does, for the subset of
kustomize these manifests use, so the tests can render them offline.

Why not the real thing: kustomize is a Go program and no PyPI package ships
it for this Python (pykustomize needs Python >= 3.14; the `kustomize`
package on PyPI is an unrelated Python DSL), and Debian 12's
kubernetes-client embeds kustomize 2.0.3, which predates Components. So this
renderer supports exactly what manifests/ uses and rejects every other
kustomization field, so a new feature fails here instead of being ignored:

  resources          files (YAML streams) and directories (kustomizations)
  components         directories whose kustomization has kind Component
  namespace          set on every namespaced object this kustomization
                     accumulated (from its resources, components, generators)
  configMapGenerator `envs` files and `literals`; the name gets kustomize's
                     content-hash suffix and references from pod templates
                     (envFrom, env valueFrom, volumes) follow the rename

Wherever `kubectl` with kustomize 5 or later is installed, the deploy test
`kustomize::render_py_builds_what_kubectl_kustomize_builds` checks that its
output equals `kubectl kustomize` for every kustomization in manifests/: the
same objects, field for field and in the same order, including the hashed
ConfigMap name.

Usage: render.py DIR [--json] [--list-files]
  default       YAML stream, like `kustomize build DIR`
  --json        one JSON array of the objects (what the tests read)
  --list-files  the resource files that went into the build, one per line
"""

import hashlib
import json
import os
import sys

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "configMapGenerator",
}
SUPPORTED_GENERATOR_FIELDS = {"name", "envs", "literals"}
CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "RuntimeClass",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "APIService",
}
WORKLOAD_KINDS = {"Pod", "DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job", "CronJob"}
# kustomize's default ("legacy") output order: these kinds first, in this
# order, then everything else, then the webhooks.
ORDER_FIRST = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
]
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


class RenderError(Exception):
    pass


def kustomization_path(directory):
    for name in KUSTOMIZATION_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise RenderError(f"{directory}: no kustomization.yaml")


def load_yaml_stream(path):
    with open(path, encoding="utf-8") as stream:
        documents = [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    for doc in documents:
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise RenderError(f"{path}: every document must be a Kubernetes object")
    return documents


def parse_env_file(path):
    """KEY=VALUE lines; blank lines and # comments skipped, nothing unquoted."""
    pairs = {}
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if "=" not in text:
                raise RenderError(f"{path}:{number}: expected KEY=VALUE")
            key, value = text.split("=", 1)
            pairs[key] = value
    return pairs


def go_json(value):
    """Go's json.Marshal of maps: sorted keys, no spaces, HTML-safe escapes."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def configmap_hash_suffix(data):
    """kustomize's name suffix: sha256 over Go's JSON of the ConfigMap's kind,
    name and data, first ten hex digits, with 0 1 3 a e swapped for letters
    so the suffix never looks like a number. The name enters as "": kustomize
    looks it up as the single field "metadata/name", which never exists (its
    output confirms it), so only the data decides the suffix."""
    digest = hashlib.sha256(
        go_json({"kind": "ConfigMap", "name": "", "data": data}).encode()
    ).hexdigest()
    return digest[:10].translate(str.maketrans("013ae", "ghkmt"))


def generate_configmaps(directory, generators):
    configmaps = []
    for generator in generators:
        unknown = set(generator) - SUPPORTED_GENERATOR_FIELDS
        if unknown:
            raise RenderError(f"{directory}: configMapGenerator fields {sorted(unknown)} not supported")
        name = generator["name"]
        data = {}
        for env_file in generator.get("envs", []):
            data.update(parse_env_file(os.path.join(directory, env_file)))
        for literal in generator.get("literals", []):
            key, value = literal.split("=", 1)
            data[key] = value
        configmaps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{name}-{configmap_hash_suffix(data)}"},
                "data": data,
                "_generated_from": name,
            }
        )
    return configmaps


def pod_spec(obj):
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return spec
    if obj["kind"] == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def rename_configmap_references(objects, renamed):
    """Points pod templates at the hashed ConfigMap names (same namespace)."""

    def rename(namespace, name):
        return renamed.get((namespace, name), name)

    for obj in objects:
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        namespace = obj["metadata"].get("namespace")
        spec = pod_spec(obj)
        containers = spec.get("containers", []) + spec.get("initContainers", [])
        for container in containers:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]
                    ref["name"] = rename(namespace, ref["name"])
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    ref["name"] = rename(namespace, ref["name"])
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                volume["configMap"]["name"] = rename(namespace, volume["configMap"]["name"])
            for source in volume.get("projected", {}).get("sources", []):
                if "configMap" in source:
                    source["configMap"]["name"] = rename(namespace, source["configMap"]["name"])


def build(directory, files, expected_kind=None):
    directory = os.path.normpath(directory)
    path = kustomization_path(directory)
    with open(path, encoding="utf-8") as stream:
        kustomization = yaml.safe_load(stream) or {}
    kind = kustomization.get("kind", "Kustomization")
    if expected_kind and kind != expected_kind:
        raise RenderError(f"{path}: expected kind {expected_kind}, found {kind}")
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise RenderError(f"{path}: fields {sorted(unknown)} not supported by render.py")
    if kind == "Component" and "namespace" in kustomization:
        raise RenderError(f"{path}: namespace in a Component is not supported")

    objects = []
    for resource in kustomization.get("resources", []):
        target = os.path.join(directory, resource)
        if os.path.isdir(target):
            objects.extend(build(target, files))
        elif os.path.isfile(target):
            files.append(os.path.normpath(target))
            objects.extend(load_yaml_stream(target))
        else:
            raise RenderError(f"{path}: resource {resource} does not exist")
    for component in kustomization.get("components", []):
        objects.extend(build(os.path.join(directory, component), files, "Component"))
    generated = generate_configmaps(directory, kustomization.get("configMapGenerator", []))
    objects.extend(generated)

    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED_KINDS:
                obj["metadata"]["namespace"] = namespace

    renamed = {}
    for configmap in generated:
        original = configmap.pop("_generated_from")
        renamed[(configmap["metadata"].get("namespace"), original)] = configmap["metadata"]["name"]
    rename_configmap_references(objects, renamed)

    seen = set()
    for obj in objects:
        identity = (obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if identity in seen:
            raise RenderError(f"{path}: {identity} defined twice")
        seen.add(identity)
    return objects


def output_order(obj):
    kind = obj["kind"]
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind)
    elif kind in ORDER_LAST:
        rank = len(ORDER_FIRST) + 1 + ORDER_LAST.index(kind)
    else:
        rank = len(ORDER_FIRST)
    group_version = obj["apiVersion"]
    return (rank, kind, group_version, obj["metadata"].get("namespace") or "", obj["metadata"]["name"])


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    flags = {a for a in argv if a.startswith("--")}
    if len(args) != 1 or flags - {"--json", "--list-files"}:
        print(__doc__, file=sys.stderr)
        return 2
    files = []
    try:
        objects = sorted(build(args[0], files), key=output_order)
    except (RenderError, OSError, yaml.YAMLError) as error:
        print(f"render.py: {error}", file=sys.stderr)
        return 1
    if "--list-files" in flags:
        print("\n".join(sorted(set(files))))
    elif "--json" in flags:
        print(json.dumps(objects, indent=1))
    else:
        print(yaml.safe_dump_all(objects, sort_keys=True, default_flow_style=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
