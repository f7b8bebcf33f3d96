#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (committed; rerun after changing it).

Deterministic: fixed mtimes, owners and orders, so a rerun changes nothing unless this file
changed. Needs only Python's standard library and the `zstd` command.

- unpack_layer: tar layers in the GNU, PAX and ustar formats holding a directory, a file, a
  symlink, a hard link, whiteouts and long names, plus hostile ones (`..`, an escaping
  symlink, a device node, a link to a missing file); each plain, gzip and zstd, and applied
  twice. Input = mode byte ((mode & 0x7f) % 3: 0 none, 1 gzip, 2 zstd; bit 7: twice) + blob.
- manifest: OCI image manifest, index and config (the image-spec examples, shortened), a
  Docker v2 manifest and manifest list, the OCI Wasm artifact manifest and config.
- reference: image references in every shape the distribution grammar allows.
- cri_log: guest output as `[control][length][bytes]` ops (see wasmcri::fuzzing::log_ops).
"""

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
WASM = b"\0asm\x01\0\0\0"
MTIME = 1767225600  # 2026-01-01T00:00:00Z


def sha(n):
    return "sha256:" + (format(n, "02x") * 32)


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tar(entries, fmt):
    """entries: (name, kind, payload) with kind file|dir|sym|hard|char|fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755 if kind == "dir" else 0o644
            data = None
            if kind == "file":
                info.type = tarfile.REGTYPE
                info.size = len(payload)
                data = io.BytesIO(payload)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = payload
            elif kind == "hard":
                info.type = tarfile.LNKTYPE
                info.linkname = payload
            elif kind == "char":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            t.addfile(info, data)
    return buf.getvalue()


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def zst(data):
    return subprocess.run(
        ["zstd", "-q", "-19", "-c"], input=data, check=True, capture_output=True
    ).stdout


def layers():
    long_dir = "deep/" + "d" * 60 + "/" + "e" * 60
    image = [
        ("app", "dir", None),
        ("app/main.wasm", "file", WASM),
        ("app/alias.wasm", "sym", "main.wasm"),
        ("app/hard.wasm", "hard", "app/main.wasm"),
        ("etc/passwd", "file", b"root:x:0:0::/:/sbin/nologin\n"),
        ("etc/root", "sym", "/etc/passwd"),
        ("lib/old.so", "file", b"old"),
        ("lib/.wh.old.so", "file", b""),
        ("app/.wh..wh..opq", "file", b""),
        (long_dir + "/file-with-a-long-name-" + "x" * 40, "file", b"long"),
    ]
    yield "image", image, (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT)
    yield "replace", [
        ("a", "file", b"1"),
        ("a", "dir", None),
        ("a/b", "file", b"2"),
        ("a", "file", b"3"),
        ("./", "dir", None),
        ("/abs/file", "file", b"4"),
    ], (tarfile.GNU_FORMAT,)
    yield "dotdot", [("a/../../escape", "file", b"x")], (tarfile.GNU_FORMAT,)
    yield "symlink-escape", [("a", "dir", None), ("a/up", "sym", "../../etc")], (tarfile.GNU_FORMAT,)
    yield "write-through-symlink", [("etc", "sym", "/etc"), ("etc/passwd", "file", b"p")], (tarfile.GNU_FORMAT,)
    yield "device", [("dev/null", "char", None), ("p", "fifo", None)], (tarfile.GNU_FORMAT,)
    yield "hardlink-missing", [("h", "hard", "../../etc/shadow")], (tarfile.GNU_FORMAT,)


def unpack_seeds():
    names = {tarfile.GNU_FORMAT: "gnu", tarfile.PAX_FORMAT: "pax", tarfile.USTAR_FORMAT: "ustar"}
    for name, entries, formats in layers():
        for fmt in formats:
            raw = tar(entries, fmt)
            base = f"{name}-{names[fmt]}"
            write("unpack_layer", base + ".tar", b"\x00" + raw)
            write("unpack_layer", base + ".tar.twice", b"\x80" + raw)
            if fmt == tarfile.GNU_FORMAT:
                write("unpack_layer", base + ".tar.gz", b"\x01" + gz(raw))
                write("unpack_layer", base + ".tar.zst", b"\x02" + zst(raw))
    # A gzip bomb: 2 MiB of zeros, past the fuzzing byte limit, in a few KiB.
    bomb = tar([("zeros", "file", bytes(2 << 20))], tarfile.GNU_FORMAT)
    write("unpack_layer", "bomb.tar.gz", b"\x01" + gz(bomb))


def desc(media_type, n, size, **extra):
    d = {"mediaType": media_type, "digest": sha(n), "size": size}
    d.update(extra)
    return d


def manifest_seeds():
    oci_manifest = "application/vnd.oci.image.manifest.v1+json"
    docker_manifest = "application/vnd.docker.distribution.manifest.v2+json"
    docs = {
        "oci-manifest.json": {
            "schemaVersion": 2,
            "mediaType": oci_manifest,
            "config": desc("application/vnd.oci.image.config.v1+json", 0xB5, 7023),
            "layers": [
                desc("application/vnd.oci.image.layer.v1.tar+gzip", 0x9D, 32654),
                desc("application/vnd.oci.image.layer.v1.tar+zstd", 0x3C, 16724),
                desc("application/vnd.oci.image.layer.v1.tar", 0xEC, 73109),
            ],
            "subject": desc(oci_manifest, 0x5B, 7682),
            "annotations": {"com.example.key1": "value1", "com.example.key2": "value2"},
        },
        "oci-index.json": {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                desc(oci_manifest, 0xE6, 7143, platform={"architecture": "ppc64le", "os": "linux"}),
                desc(oci_manifest, 0x5B, 7682, platform={"architecture": "amd64", "os": "linux"}),
                desc(oci_manifest, 0x7A, 1024, platform={"architecture": "arm64", "os": "linux", "variant": "v8"}),
                desc(oci_manifest, 0x11, 512, platform={"architecture": "wasm", "os": "wasip1"}),
            ],
            "annotations": {"com.example.key1": "value1"},
        },
        "docker-manifest.json": {
            "schemaVersion": 2,
            "mediaType": docker_manifest,
            "config": desc("application/vnd.docker.container.image.v1+json", 0xB5, 7023),
            "layers": [desc("application/vnd.docker.image.rootfs.diff.tar.gzip", 0xE6, 32654)],
        },
        "docker-manifest-list.json": {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests": [
                desc(docker_manifest, 0xE6, 7143, platform={"architecture": "ppc64le", "os": "linux"}),
                desc(docker_manifest, 0x5B, 7682, platform={"architecture": "amd64", "os": "linux", "features": ["sse4"]}),
            ],
        },
        "wasm-artifact.json": {
            "schemaVersion": 2,
            "mediaType": oci_manifest,
            "artifactType": "application/wasm",
            "config": desc("application/vnd.wasm.config.v0+json", 0x44, 470),
            "layers": [desc("application/wasm", 0x45, 53874, annotations={"org.opencontainers.image.title": "app.wasm"})],
        },
        "oci-layout-index.json": {
            "schemaVersion": 2,
            "manifests": [
                desc(oci_manifest, 0x5B, 7682, annotations={"org.opencontainers.image.ref.name": "localhost/app:v1"}),
            ],
        },
        "oci-config.json": {
            "created": "2015-10-31T22:22:56.015925234Z",
            "author": "Alyssa P. Hacker <alyspdev@example.com>",
            "architecture": "wasm",
            "os": "wasip2",
            "config": {
                "User": "alice:1000",
                "ExposedPorts": {"8080/tcp": {}},
                "Env": ["PATH=/", "FOO=oci_is_a"],
                "Entrypoint": ["/app.wasm"],
                "Cmd": ["--foreground", "--config", "/etc/my-app.d/default.cfg"],
                "WorkingDir": "/home/alice",
                "Labels": {"com.example.project.git.url": "https://example.com/project.git"},
                "StopSignal": "SIGTERM",
            },
            "rootfs": {"diff_ids": [sha(0xC6), sha(0x5F)], "type": "layers"},
            "history": [{"created": "2015-10-31T22:22:54.690851953Z", "created_by": "/bin/sh -c #(nop) ADD file"}],
        },
        "wasm-config.json": {
            "created": "2024-01-01T00:00:00Z",
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [sha(0x45)],
            "component": {"exports": ["wasi:http/incoming-handler@0.2.0"], "imports": ["wasi:io/streams@0.2.0"]},
        },
    }
    for name, doc in docs.items():
        write("manifest", name, json.dumps(doc, indent=1).encode())


def reference_seeds():
    d = sha(0xAB)
    refs = [
        "hello",
        "library/busybox:1.36",
        "docker.io/library/x:tag@" + d,
        "index.docker.io/library/busybox:1",
        "localhost:5000/app:v1",
        "127.0.0.1:5000/a/b/c@" + d,
        "[::1]:5000/app:latest",
        "ghcr.io/org/team/app:v1.2.3-rc.1_build",
        "registry.example.com:443/ns/app@" + d,
        "x:" + "t" * 128,
    ]
    for i, r in enumerate(refs):
        write("reference", f"ref-{i:02}", r.encode())


def op(stream, data, rotate=False, repeat_k=0):
    assert len(data) < 256
    return bytes([stream | (2 if rotate else 0) | (repeat_k << 2), len(data)]) + data


def log_seeds():
    seeds = {
        "lines": op(0, b"hello\nworld\n") + op(1, b"oops\n"),
        "interleaved-partials": op(0, b"abc") + op(1, b"err") + op(1, b"or\n") + op(0, b"def\n"),
        "no-final-newline": op(0, b"\nno newline"),
        "long-line": op(0, b"x" * 200, repeat_k=10) + op(0, b"\nafter\n"),
        "utf8-split": op(0, "€".encode() * 20, repeat_k=20) + op(0, "\nhéllo wörld ü€\n".encode()),
        "rotation": op(0, b"before\npart") + op(0, b"ial\n", rotate=True) + op(1, b"after\n", rotate=True),
        "binary": op(1, bytes(range(256))[:255]),
    }
    for name, data in seeds.items():
        write("cri_log", name, data)


def main():
    # Pad archives to a block, not to the default 10 KiB record: a smaller corpus.
    tarfile.RECORDSIZE = tarfile.BLOCKSIZE
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    unpack_seeds()
    manifest_seeds()
    reference_seeds()
    log_seeds()


if __name__ == "__main__":
    main()
