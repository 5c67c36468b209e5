"""oras-py against a registry under test: artifact push/pull with custom media types,
chunked push, then an OCI 1.1 manifest with artifactType and subject, listed by the
referrers API. Prints ORAS OK on success; any failure raises.

usage: python3 oras_roundtrip.py HOST:PORT WORKDIR
"""
import hashlib
import json
import os
import sys
import urllib.request

import oras.client
import oras.container
import oras.oci

host, work = sys.argv[1], sys.argv[2]
os.chdir(work)  # oras-py wants the files under the current directory

client = oras.client.OrasClient(hostname=host, insecure=True)

with open("config.json", "w") as f:
    json.dump({"kind": "sealer-test"}, f)

LAYER_TYPE = "application/vnd.sealer.test.layer.v1+bin"
CONFIG_TYPE = "application/vnd.sealer.test.artifact.v1"

# 1. Artifact with custom layer and config media types, monolithic then chunked (new
#    content each time: oras-py skips blobs the registry already has).
for tag, chunked in (("v1", False), ("chunked", True)):
    payload = os.urandom(3 * 1024 * 1024 + 5)
    with open("payload.bin", "wb") as f:
        f.write(payload)
    target = f"{host}/test/artifact:{tag}"
    resp = client.push(
        target=target,
        files=[f"payload.bin:{LAYER_TYPE}"],
        manifest_config=f"config.json:{CONFIG_TYPE}",
        do_chunked=chunked,
        chunk_size=1024 * 1024,
    )
    assert resp.status_code == 201, (tag, resp.status_code, resp.text)
    out = os.path.join(work, f"out-{tag}")
    files = client.pull(target=target, outdir=out)
    assert len(files) == 1, files
    with open(files[0], "rb") as f:
        got = f.read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest(), tag

manifest = client.get_manifest(f"{host}/test/artifact:v1")
assert manifest["config"]["mediaType"] == CONFIG_TYPE, manifest
assert manifest["layers"][0]["mediaType"] == LAYER_TYPE, manifest

# 2. An OCI 1.1 artifact manifest: artifactType, empty config, subject = the artifact above.
subject_raw = urllib.request.urlopen(
    urllib.request.Request(
        f"http://{host}/v2/test/artifact/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
).read()
subject = {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:" + hashlib.sha256(subject_raw).hexdigest(),
    "size": len(subject_raw),
}
with open("empty.json", "w") as f:
    f.write("{}")
with open("sbom.json", "w") as f:
    json.dump({"sbom": True}, f)
container = oras.container.Container(f"{host}/test/artifact:sbom")
empty_layer = oras.oci.NewLayer("empty.json", "application/vnd.oci.empty.v1+json", is_dir=False)
sbom_layer = oras.oci.NewLayer("sbom.json", "application/spdx+json", is_dir=False)
for path, layer in (("empty.json", empty_layer), ("sbom.json", sbom_layer)):
    r = client.upload_blob(path, container, layer)
    assert r.status_code in (200, 201), r.text
ARTIFACT_TYPE = "application/vnd.sealer.test.sbom.v1"
sbom_manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": ARTIFACT_TYPE,
    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_layer["digest"], "size": 2},
    "layers": [sbom_layer],
    "subject": subject,
    "annotations": {"org.opencontainers.image.created": "2026-11-26T00:00:00Z"},
}
r = client.upload_manifest(sbom_manifest, container)
assert r.status_code == 201, r.text
assert r.headers.get("OCI-Subject") == subject["digest"], dict(r.headers)

# 3. The referrers API lists it, with and without the artifactType filter.
for query, filtered in (("", False), (f"?artifactType={ARTIFACT_TYPE}", True), ("?artifactType=other/type", True)):
    resp = urllib.request.urlopen(f"http://{host}/v2/test/artifact/referrers/{subject['digest']}{query}")
    body = json.loads(resp.read())
    assert resp.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    assert (resp.headers.get("OCI-Filters-Applied") == "artifactType") == filtered, query
    expected = 0 if "other/type" in query else 1
    assert len(body["manifests"]) == expected, (query, body)
    if expected:
        d = body["manifests"][0]
        assert d["artifactType"] == ARTIFACT_TYPE, d
        assert d["annotations"]["org.opencontainers.image.created"] == "2026-11-26T00:00:00Z", d

print("ORAS OK")
