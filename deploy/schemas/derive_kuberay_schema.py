"""Derive deploy/schemas/kuberay-rayjob-v1.schema.json from KubeRay's RayJob CRD.

    python deploy/schemas/derive_kuberay_schema.py ray.io_rayjobs.yaml v1.7.0 <commit> \
        > deploy/schemas/kuberay-rayjob-v1.schema.json

The input is ray-operator/config/crd/bases/ray.io_rayjobs.yaml of github.com/ray-project/kuberay
at a release tag (1.4 MB: a CRD inlines the whole Kubernetes PodTemplateSpec three times, with
every field's description). The output keeps the apiVersion ray.io/v1 openAPIV3Schema exactly —
every field name, type, enum, pattern, `required` — and changes only what makes it small and
strict:

* descriptions and the `status` subtree (written by the operator, never by users) are dropped;
* the PodTemplateSpec schema, identical at every place it appears, is stored once under $defs
  and referenced (checked: the script fails if the copies differ);
* every object schema with `properties` gets `additionalProperties: false`, unless it preserves
  unknown fields (x-kubernetes-preserve-unknown-fields). That is what `kubectl apply` does with
  its default strict field validation (kubectl ≥ 1.27): an unknown field is an error, so a typo'd
  key fails here as it would fail there.

Not reproduced: CEL rules (x-kubernetes-validations), and metadata beyond "an object" (the CRD
says only `type: object` for ObjectMeta; the API server checks it against its built-in schema).
"""

from __future__ import annotations

import hashlib
import json
import sys

import yaml

POD_TEMPLATE = "#/$defs/PodTemplateSpec"


def _strip(node):
    if isinstance(node, dict):
        out = {k: _strip(v) for k, v in node.items() if k != "description"}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def derive(crd: dict, tag: str, commit: str, sha256: str) -> dict:
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = v1["schema"]["openAPIV3Schema"]
    schema["properties"].pop("status", None)
    spec = schema["properties"]["spec"]["properties"]
    cluster = spec["rayClusterSpec"]["properties"]
    holders = [cluster["headGroupSpec"]["properties"],
               cluster["workerGroupSpecs"]["items"]["properties"]]
    templates = [h["template"] for h in holders] + [spec["submitterPodTemplate"]]
    if any(t != templates[0] for t in templates[1:]):
        sys.exit("the CRD's PodTemplateSpec copies differ; cannot share one definition")
    for h in holders:
        h["template"] = {"$ref": POD_TEMPLATE}
    spec["submitterPodTemplate"] = {"$ref": POD_TEMPLATE}
    out = {
        "$comment": (f"Derived by deploy/schemas/derive_kuberay_schema.py from KubeRay {tag} "
                     f"(github.com/ray-project/kuberay, commit {commit}), file "
                     f"ray-operator/config/crd/bases/ray.io_rayjobs.yaml (sha256 {sha256}), "
                     "version ray.io/v1: descriptions and status dropped, PodTemplateSpec shared, "
                     "unknown fields rejected as kubectl's strict field validation does."),
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"KubeRay RayJob ray.io/v1 ({tag})",
    }
    body = _strip(schema)
    body["properties"]["apiVersion"] = {"const": "ray.io/v1"}
    body["properties"]["kind"] = {"const": "RayJob"}
    body["required"] = ["apiVersion", "kind", "metadata", "spec"]
    out.update(body)
    out["$defs"] = {"PodTemplateSpec": _strip(templates[0])}
    return out


if __name__ == "__main__":
    path, tag, commit = sys.argv[1:4]
    raw = open(path, "rb").read()
    doc = derive(yaml.safe_load(raw), tag, commit, hashlib.sha256(raw).hexdigest())
    json.dump(doc, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
