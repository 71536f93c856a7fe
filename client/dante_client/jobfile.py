"""The YAML job file: its schema, checked here with the line of every mistake, and turned into
the gateway's JSON job spec plus the local files to upload first and download after.

```yaml
name: train-mnist                  # required
script_file: train.py              # or `script: |` inline, or `image:` for a container
interpreter: python3               # default: python3 for *.py, else bash
resources: {gpu_count: 1, gpu_model: "H100*", min_vram_mb: 40000, cpu: 4, memory_mb: 16000}
                                   # nodes: 2 -> a gang: gpu_count on each of 2 hosts, all at once
env: {EPOCHS: "3"}
inputs:                            # storage keys the job reads ($DANTE_INPUTS_DIR/<key>)
  - datasets/mnist.npz             #   already in storage
  - {src: ./data.csv, key: data/data.csv}   # a local file, uploaded first
outputs:                           # keys the job writes ($DANTE_OUTPUTS_DIR/<key>)
  - model.pt                       #   downloaded to ./model.pt afterwards
  - {key: metrics.json, dest: out/metrics.json}
priority: 5                        # 0-10
timeout: 30m                       # seconds, or 90s / 30m / 2h / 1d
grace: 30s                         # SIGTERM, then this long before SIGKILL (default 10s, max 1h)
retries: 2
max_price_per_hour: 2.50
labels: {region: eu}              # only providers with these labels
tags: [nightly]
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dante_client.errors import JobFileError

TOP_LEVEL = {
    "name",
    "description",
    "script",
    "script_file",
    "interpreter",
    "image",
    "command",
    "resources",
    "env",
    "inputs",
    "outputs",
    "priority",
    "timeout",
    "grace",
    "retries",
    "max_price_per_hour",
    "labels",
    "tags",
}
RESOURCES: dict[str, type | tuple[type, ...]] = {
    "gpu_count": int,
    "gpu_model": str,
    "min_vram_mb": int,
    "min_compute_capability": str,
    "cpu": (int, float),
    "memory_mb": int,
    "nodes": int,  # a gang (multi-node) job: each rank gets DANTE_RANK, NNODES, MASTER_ADDR
}
KEY_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,512}$")
DURATION_RE = re.compile(r"^(\d+)\s*([smhd]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
TYPE_NAMES = {int: "an integer", str: "a string", float: "a number", bool: "true or false"}


@dataclass
class JobFile:
    """A checked job file: what to submit, what to upload before, what to fetch after."""

    spec: dict[str, Any]
    uploads: list[tuple[Path, str]] = field(default_factory=list)  # (local file, key)
    downloads: list[tuple[str, Path]] = field(default_factory=list)  # (key, local path)


class _Checker:
    def __init__(self, source: str, loader: yaml.SafeLoader, base: Path) -> None:
        self.source = source
        self.loader = loader
        self.base = base

    def fail(self, node: yaml.Node, where: str, message: str) -> JobFileError:
        line = node.start_mark.line + 1
        return JobFileError(f"{self.source}:{line}: {where}: {message}", code="job_file")

    def value(self, node: yaml.Node) -> Any:
        return self.loader.construct_object(node, deep=True)

    def scalar(self, node: yaml.Node, where: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, where, f"expected {_kind_name(kind)}, got a {_node_name(node)}")
        value = self.value(node)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # YAML reads `yes`/`no`/numbers by themselves; a bool is not an int here.
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.fail(node, where, f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def mapping(self, node: yaml.Node, where: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, f"expected a mapping, got a {_node_name(node)}")
        out, seen = [], set()
        for key_node, value_node in node.value:
            key = self.scalar(key_node, where, str)
            if key in seen:
                raise self.fail(key_node, where, f"{key!r} is given twice")
            seen.add(key)
            out.append((key, key_node, value_node))
        return out

    def sequence(self, node: yaml.Node, where: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, where, f"expected a list, got a {_node_name(node)}")
        return list(node.value)

    def str_map(self, node: yaml.Node, where: str) -> dict[str, str]:
        out = {}
        for key, _, value in self.mapping(node, where):
            raw = self.scalar(value, f"{where}.{key}", (str, int, float, bool))
            out[key] = str(raw).lower() if isinstance(raw, bool) else str(raw)
        return out

    def storage_key(self, node: yaml.Node, where: str) -> str:
        key = self.scalar(node, where, str)
        parts = key.split("/")
        if not KEY_RE.match(key) or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise self.fail(
                node,
                where,
                f"{key!r} is not a storage key (relative, letters, digits, _ . - /, "
                "no empty, '.' or '..' parts)",
            )
        return key

    def local_file(self, node: yaml.Node, where: str) -> Path:
        path = self.base / Path(self.scalar(node, where, str)).expanduser()
        if not path.is_file():
            raise self.fail(node, where, f"no such file: {path}")
        return path


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(TYPE_NAMES.get(k, k.__name__) for k in kinds)


def _node_name(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "value"


def load(path: str | Path) -> JobFile:
    """Read and check a job file; raises ``JobFileError`` naming the file and line."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise JobFileError(f"{file}: cannot read: {exc.strerror}", code="job_file") from exc
    return parse(text, source=str(file), base=file.parent)


def parse(text: str, *, source: str = "<job>", base: Path | None = None) -> JobFile:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise JobFileError(
            f"{source}{line}: not valid YAML: {exc.problem}", code="job_file"
        ) from exc
    if root is None:
        raise JobFileError(f"{source}: the file is empty", code="job_file")
    return _build(_Checker(source, loader, base or Path.cwd()), root)


def _build(c: _Checker, root: yaml.Node) -> JobFile:
    fields = {k: (kn, vn) for k, kn, vn in c.mapping(root, "job")}
    for key, (key_node, _) in fields.items():
        if key not in TOP_LEVEL:
            raise c.fail(key_node, key, f"unknown field (known: {', '.join(sorted(TOP_LEVEL))})")
    if "name" not in fields:
        raise c.fail(root, "name", "is required")
    spec: dict[str, Any] = {"name": c.scalar(fields["name"][1], "name", str)}
    job = JobFile(spec)

    kinds = [k for k in ("script", "script_file", "image") if k in fields]
    if len(kinds) != 1:
        node = fields[kinds[1]][0] if len(kinds) > 1 else root
        raise c.fail(node, "job", "give exactly one of script, script_file or image")
    if kinds[0] == "image":
        spec["type"] = "container"
        params: dict[str, Any] = {"docker_image": c.scalar(fields["image"][1], "image", str)}
        if "command" in fields:
            node = fields["command"][1]
            if isinstance(node, yaml.SequenceNode):
                params["docker_command"] = [
                    c.scalar(n, f"command[{i}]", str) for i, n in enumerate(node.value)
                ]
            else:
                params["docker_command"] = c.scalar(node, "command", str)
        if "interpreter" in fields:
            raise c.fail(fields["interpreter"][0], "interpreter", "is for scripts, not images")
    else:
        spec["type"] = "script"
        if "command" in fields:
            raise c.fail(fields["command"][0], "command", "is for images; use script")
        interpreter = "bash"
        if kinds[0] == "script":
            content = c.scalar(fields["script"][1], "script", str)
        else:
            script_path = c.local_file(fields["script_file"][1], "script_file")
            content = script_path.read_text()
            if script_path.suffix == ".py":
                interpreter = "python3"
        if not content.strip():
            raise c.fail(fields[kinds[0]][1], kinds[0], "is empty")
        if "interpreter" in fields:
            interpreter = c.scalar(fields["interpreter"][1], "interpreter", str)
        params = {"script_content": content, "script_interpreter": interpreter}
    spec["params"] = params

    if "description" in fields:
        spec["description"] = c.scalar(fields["description"][1], "description", str)
    if "resources" in fields:
        resources = {}
        for key, key_node, value in c.mapping(fields["resources"][1], "resources"):
            if key not in RESOURCES:
                known = ", ".join(RESOURCES)
                raise c.fail(key_node, f"resources.{key}", f"unknown field (known: {known})")
            resources[key] = c.scalar(value, f"resources.{key}", RESOURCES[key])
        spec["resources"] = resources
    if "env" in fields:
        spec["env"] = c.str_map(fields["env"][1], "env")
    if "labels" in fields:
        spec["labels"] = c.str_map(fields["labels"][1], "labels")
    if "tags" in fields:
        spec["tags"] = [
            c.scalar(n, f"tags[{i}]", str)
            for i, n in enumerate(c.sequence(fields["tags"][1], "tags"))
        ]
    if "priority" in fields:
        node = fields["priority"][1]
        spec["priority"] = _in_range(c, node, "priority", c.scalar(node, "priority", int), 0, 10)
    if "retries" in fields:
        node = fields["retries"][1]
        spec["max_retries"] = _in_range(c, node, "retries", c.scalar(node, "retries", int), 0, 10)
    if "timeout" in fields:
        spec["timeout_seconds"] = _duration(c, fields["timeout"][1], "timeout", 1, 30 * 86400)
    if "grace" in fields:
        spec["grace_seconds"] = _duration(c, fields["grace"][1], "grace", 0, 3600)
    if "max_price_per_hour" in fields:
        node = fields["max_price_per_hour"][1]
        price = c.scalar(node, "max_price_per_hour", (int, float))
        if price < 0:
            raise c.fail(node, "max_price_per_hour", "must not be negative")
        spec["max_price_per_hour"] = price
    if "inputs" in fields:
        spec["inputs"] = _inputs(c, fields["inputs"][1], job)
    if "outputs" in fields:
        spec["outputs"] = _outputs(c, fields["outputs"][1], job)
    return job


def _in_range(c: _Checker, node: yaml.Node, where: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise c.fail(node, where, f"must be between {low} and {high}, got {value}")
    return value


def _duration(c: _Checker, node: yaml.Node, where: str, low: int, high: int) -> int:
    raw = c.scalar(node, where, (int, str))
    if isinstance(raw, int):
        seconds = raw
    else:
        match = DURATION_RE.match(raw.strip())
        if not match:
            raise c.fail(node, where, f"expected seconds or e.g. 90s, 30m, 2h, 1d; got {raw!r}")
        seconds = int(match.group(1)) * UNITS[match.group(2)]
    return _in_range(c, node, where, seconds, low, high)


def _fields(
    c: _Checker, item: yaml.MappingNode, where: str, known: tuple[str, ...]
) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """An I/O entry's fields by name (key node, value node); a field not in ``known`` fails."""
    entry = {k: (kn, vn) for k, kn, vn in c.mapping(item, where)}
    for k, (kn, _) in entry.items():
        if k not in known:
            raise c.fail(kn, f"{where}.{k}", f"unknown field (known: {', '.join(known)})")
    return entry


def _inputs(c: _Checker, node: yaml.Node, job: JobFile) -> list[str]:
    keys = []
    for i, item in enumerate(c.sequence(node, "inputs")):
        where = f"inputs[{i}]"
        if isinstance(item, yaml.MappingNode):
            entry = _fields(c, item, where, ("src", "key"))
            if "src" not in entry:
                raise c.fail(item, where, "src (a local file) is required")
            local = c.local_file(entry["src"][1], f"{where}.src")
            key = (
                c.storage_key(entry["key"][1], f"{where}.key")
                if "key" in entry
                else f"inputs/{local.name}"
            )
            job.uploads.append((local, key))
        else:
            key = c.storage_key(item, where)
        keys.append(key)
    return keys


def _outputs(c: _Checker, node: yaml.Node, job: JobFile) -> list[str]:
    keys = []
    for i, item in enumerate(c.sequence(node, "outputs")):
        where = f"outputs[{i}]"
        if isinstance(item, yaml.MappingNode):
            entry = _fields(c, item, where, ("key", "dest"))
            if "key" not in entry:
                raise c.fail(item, where, "key is required")
            key = c.storage_key(entry["key"][1], f"{where}.key")
            dest = (
                Path(c.scalar(entry["dest"][1], f"{where}.dest", str))
                if "dest" in entry
                else Path(key)
            )
        else:
            key = c.storage_key(item, where)
            dest = Path(key)
        job.downloads.append((key, dest))
        keys.append(key)
    return keys
