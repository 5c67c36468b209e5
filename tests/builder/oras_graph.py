"""Walks a CloudImage's graph with oras-py: the index, every manifest it lists that the
registry holds, and every blob they need, each checked against its digest. Prints
"GRAPH OK <manifests> <blobs>" and, per container image, "IMAGE <reference>".

usage: python3 oras_graph.py HOST:PORT REPO:TAG
"""
import hashlib
import json
import sys

import oras.provider

host, ref = sys.argv[1], sys.argv[2]
repo = ref.rsplit(":", 1)[0]
registry = oras.provider.Registry(hostname=host, insecure=True)

INDEX_TYPES = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
]
ALL_TYPES = INDEX_TYPES + [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]

def check(data, digest):
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    assert actual == digest, f"{digest} arrived as {actual}"

top = registry.get_manifest(f"{host}/{ref}", allowed_media_type=ALL_TYPES)
assert top.get("manifests"), f"{ref} is not an index: {json.dumps(top)[:200]}"
roles = [m.get("annotations", {}).get("sealer.image.role") for m in top["manifests"]]
assert "rootfs" in roles, f"no rootfs manifest in {roles}"

manifests, blobs = 1, set()
queue = list(top["manifests"])
while queue:
    d = queue.pop()
    notes = d.get("annotations", {})
    if notes.get("sealer.image.role") == "container-image":
        print("IMAGE", notes["sealer.image.container.reference"])
    m = registry.get_manifest(f"{host}/{repo}@{d['digest']}", allowed_media_type=ALL_TYPES)
    manifests += 1
    if "manifests" in m:
        queue.extend(m["manifests"])
        continue
    for b in [m["config"]] + m["layers"]:
        if b["digest"] in blobs:
            continue
        r = registry.get_blob(f"{host}/{repo}", b["digest"])
        assert r.status_code == 200, f"blob {b['digest']}: {r.status_code}"
        check(r.content, b["digest"])
        blobs.add(b["digest"])
print("GRAPH OK", manifests, len(blobs))
