"""The CRI tests' images, built locally: nothing is ever pulled.

* busybox: the repo's static busybox rootfs (build/make-rootfs.sh), `sh` as its command;
* pause: tests/cri/pause.c compiled with `gcc -static`, the Pod sandbox image.

Each is written as an OCI image layout archive (oci-layout, index.json, one manifest,
one config, one uncompressed tar layer) and imported with `ctr images import` into the
k8s.io namespace, where containerd's CRI plugin looks for images.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

CRI_DIR = Path(__file__).resolve().parent
REPO = CRI_DIR.parents[1]

BUSYBOX_IMAGE = "localhost/runproc-test/busybox:1"
PAUSE_IMAGE = "localhost/runproc-test/pause:1"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"

# A fixed mtime keeps the layer (and so every digest) reproducible from run to run.
EPOCH = 1_700_000_000


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


def _json_blob(media_type: str, value: object) -> Blob:
    return Blob(media_type, json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def layer_from_dir(root: Path) -> bytes:
    """An uncompressed tar layer of ``root``'s tree, owned by root, in sorted order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                path = Path(dirpath) / name
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = EPOCH
                if info.isfile():
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def oci_archive(name: str, layer: bytes, config: dict[str, object]) -> bytes:
    """An OCI image layout, as a tar archive, holding one single-layer linux/amd64 image."""
    layer_blob = Blob(MEDIA_LAYER, layer)
    config_blob = _json_blob(
        MEDIA_CONFIG,
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            # Uncompressed layer: its diff id is its own digest.
            "rootfs": {"type": "layers", "diff_ids": [layer_blob.digest]},
            "history": [{"created_by": "runproc tests/cri/cri_images.py"}],
        },
    )
    manifest = _json_blob(
        MEDIA_MANIFEST,
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config_blob.descriptor(),
            "layers": [layer_blob.descriptor()],
        },
    )
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            manifest.descriptor(
                annotations={
                    # ctr import names the image from this annotation (the full reference)...
                    "io.containerd.image.name": name,
                    # ...and the OCI one carries the tag, as other tools expect.
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                }
            )
        ],
    }
    files: dict[str, bytes] = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
    }
    for blob in (layer_blob, config_blob, manifest):
        files["blobs/sha256/" + blob.digest.split(":", 1)[1]] = blob.data
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, EPOCH
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_busybox_archive(workdir: Path) -> bytes:
    rootfs = workdir / "busybox-rootfs"
    subprocess.run(["sh", str(REPO / "build" / "make-rootfs.sh"), str(rootfs)], check=True, timeout=120,
                   capture_output=True)
    # Mount points CRI and the runtime fill in; present in real images too.
    for sub in ("etc", "proc", "sys", "dev", "run", "tmp", "var"):
        (rootfs / sub).mkdir(exist_ok=True)
    config = {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["sh"],
        "WorkingDir": "/",
    }
    return oci_archive(BUSYBOX_IMAGE, layer_from_dir(rootfs), config)


def build_pause_archive(workdir: Path) -> bytes:
    rootfs = workdir / "pause-rootfs"
    rootfs.mkdir(exist_ok=True)
    binary = rootfs / "pause"
    subprocess.run(
        ["gcc", "-static", "-Os", "-Wall", "-Werror", "-o", str(binary), str(CRI_DIR / "pause.c")],
        check=True,
        timeout=120,
        capture_output=True,
    )
    binary.chmod(0o755)
    config = {"Entrypoint": ["/pause"], "WorkingDir": "/"}
    return oci_archive(PAUSE_IMAGE, layer_from_dir(rootfs), config)
