"""oras-py against a registry that requires sign-in: refused without credentials and
with a wrong password; after login it pushes and pulls back through the token flow.
Prints ORAS LOGIN OK on success; any failure raises.

usage: python3 oras_login.py HOST:PORT WORKDIR
"""
import hashlib
import os
import sys

import oras.client

host, work = sys.argv[1], sys.argv[2]
os.chdir(work)  # oras-py wants the files under the current directory
payload = os.urandom(256 * 1024)
with open("payload.bin", "wb") as f:
    f.write(payload)
target = f"{host}/a/oras:1"


def push_as(user, password):
    client = oras.client.OrasClient(hostname=host, insecure=True)
    if user:
        client.login(username=user, password=password, hostname=host)
    try:
        return client, client.push(target=target, files=["payload.bin"]).status_code
    except Exception as e:  # oras-py raises on some refusals, returns others
        return client, str(e)


_, anonymous = push_as(None, None)
assert anonymous != 201, anonymous
_, wrong = push_as("alice", "not-her-password")
assert wrong != 201, wrong
client, status = push_as("alice", "a-pass")
assert status == 201, status
files = client.pull(target=target, outdir=os.path.join(work, "out"))
with open(files[0], "rb") as f:
    assert hashlib.sha256(f.read()).digest() == hashlib.sha256(payload).digest()
print("ORAS LOGIN OK")
