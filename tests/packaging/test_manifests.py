"""Structure of the shipped Kubernetes manifests (packaging/k8s/*.yaml), without new dependencies.

The manifests keep to a small YAML subset (block mappings and lists, JSON-style flow lists and
quoted strings), which the loader below parses and rejects anything outside of. The Kind
end-to-end test (tests/kind) applies the same files to a real API server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

K8S = Path(__file__).resolve().parents[2] / "packaging" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))


@dataclass
class Line:
    number: int
    indent: int
    text: str


def scalar(raw: str, where: int) -> object:
    """Plain scalars as YAML 1.2 core types (so `1` is an int, `"1"` a string)."""
    if raw.startswith(("[", '"')):
        return json.loads(raw)  # flow lists and double-quoted strings here are valid JSON
    if raw.startswith("'"):
        if not raw.endswith("'") or len(raw) < 2:
            raise ValueError(f"line {where}: unterminated single-quoted string")
        return raw[1:-1].replace("''", "'")
    if raw in ("true", "false"):
        return raw == "true"
    if raw.lstrip("-").isdigit():
        return int(raw)
    if raw[0] in "{&*!|>%@`" or " #" in raw:
        raise ValueError(f"line {where}: YAML feature outside the supported subset: {raw!r}")
    return raw


def parse_block(lines: list[Line], i: int, indent: int) -> tuple[object, int]:
    if lines[i].text.startswith("- "):
        items: list[object] = []
        while i < len(lines) and lines[i].indent == indent and lines[i].text.startswith("- "):
            item = lines[i].text[2:]
            if ": " in item or item.endswith(":"):
                # "- key: value" opens a mapping whose keys sit two columns further in.
                lines[i] = Line(lines[i].number, indent + 2, item)
                value, i = parse_block(lines, i, indent + 2)
            else:
                value, i = scalar(item, lines[i].number), i + 1
            items.append(value)
        return items, i
    mapping: dict[str, object] = {}
    while i < len(lines) and lines[i].indent == indent and not lines[i].text.startswith("- "):
        line = lines[i]
        key, sep, rest = line.text.partition(":")
        if not sep or (rest and not rest.startswith(" ")) or not key:
            raise ValueError(f"line {line.number}: expected 'key: value', got {line.text!r}")
        if key in mapping:
            raise ValueError(f"line {line.number}: duplicate key {key!r}")
        rest = rest.strip()
        if rest:
            mapping[key], i = scalar(rest, line.number), i + 1
        else:
            if i + 1 >= len(lines) or lines[i + 1].indent <= indent:
                raise ValueError(f"line {line.number}: {key!r} has no value")
            mapping[key], i = parse_block(lines, i + 1, lines[i + 1].indent)
    return mapping, i


def load_documents(text: str) -> list[dict]:
    docs: list[dict] = []
    for chunk in text.split("\n---\n"):
        lines = []
        for number, raw in enumerate(chunk.splitlines(), 1):
            if "\t" in raw:
                raise ValueError(f"line {number}: tab character")
            if not raw.strip() or raw.lstrip().startswith("#") or raw == "---":
                continue
            lines.append(Line(number, len(raw) - len(raw.lstrip(" ")), raw.strip()))
        if not lines:
            continue
        doc, end = parse_block(lines, 0, lines[0].indent)
        if end != len(lines):
            raise ValueError(f"line {lines[end].number}: unexpected indentation")
        assert isinstance(doc, dict)
        docs.append(doc)
    return docs


def load(name: str) -> dict:
    (doc,) = load_documents((K8S / name).read_text())
    return doc


def test_loader_rejects_what_it_does_not_understand() -> None:
    # The structural checks below are only as good as the loader: it must not guess.
    with pytest.raises(ValueError):
        load_documents("a: 1\n\tb: 2\n")
    with pytest.raises(ValueError):
        load_documents("a: 1\na: 2\n")
    with pytest.raises(ValueError):
        load_documents("metadata:\n  name: x\n    bad: indent\n")
    assert load_documents('a:\n  b: "1"\n  c: 1\n  d:\n    - e: [ "x" ]\n') == [
        {"a": {"b": "1", "c": 1, "d": [{"e": ["x"]}]}}
    ]


def test_all_manifests_parse_with_kind_and_name() -> None:
    assert {m.name for m in MANIFESTS} >= {
        "runtimeclass.yaml",
        "pod-normal.yaml",
        "pod-host.yaml",
        "pod-host-pause.yaml",
    }
    names = []
    for manifest in MANIFESTS:
        for doc in load_documents(manifest.read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), manifest.name
            names.append((doc["kind"], doc["metadata"]["name"]))
    assert len(names) == len(set(names)), names


def test_runtimeclass() -> None:
    doc = load("runtimeclass.yaml")
    assert doc == {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "runproc"},
        "handler": "runproc",
    }


def pod_spec(doc: dict) -> dict:
    assert doc["apiVersion"] == "v1" and doc["kind"] == "Pod"
    spec = doc["spec"]
    assert spec["runtimeClassName"] == "runproc"
    (container,) = spec["containers"]
    assert isinstance(container["image"], str)
    assert all(isinstance(arg, str) for arg in container["command"])
    return spec


def test_normal_pod_is_not_host_mode() -> None:
    doc = load("pod-normal.yaml")
    spec = pod_spec(doc)
    assert "runproc.host" not in doc["metadata"].get("annotations", {})
    assert "busybox" in spec["containers"][0]["image"]


@pytest.mark.parametrize("name", ["pod-host.yaml", "pod-host-pause.yaml"])
def test_host_mode_pods_carry_the_string_annotation(name: str) -> None:
    doc = load(name)
    pod_spec(doc)
    # The API server rejects non-string annotation values; "1" must stay quoted.
    assert doc["metadata"]["annotations"]["runproc.host"] == "1"


def test_pause_pod_needs_no_pull() -> None:
    spec = pod_spec(load("pod-host-pause.yaml"))
    container = spec["containers"][0]
    assert container["image"] == "registry.k8s.io/pause:3.9"
    assert container["imagePullPolicy"] == "Never"
    # The pause image has no shell: this only works because host mode uses the node's /bin/sh.
    assert container["command"][:2] == ["/bin/sh", "-c"]
    assert "host-mode-ok" in container["command"][2]
