"""cp, ls, rm: objects in your storage namespace, named ``dante:KEY``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dante_client.cli.common import JsonOpt, client, fail, out, print_json, size, table, when
from dante_client.cli.progress import transfer

REMOTE = ("dante://", "dante:")


def _remote(arg: str) -> str | None:
    for prefix in REMOTE:
        if arg.startswith(prefix):
            return arg[len(prefix) :].lstrip("/")
    return None


def cp(
    src: Annotated[str, typer.Argument(help="A local file or dante:KEY.")],
    dst: Annotated[str, typer.Argument(help="dante:KEY (or dante:PREFIX/) or a local path.")],
) -> None:
    """Copy a file to or from storage, streaming (constant memory) with a progress bar.
    An interrupted download continues where it stopped when run again.

    Examples:

        dante cp ./data.tar dante:datasets/data.tar

        dante cp dante:results/model.pt ./model.pt

        dante cp ./a.csv dante:inputs/     # keeps the name: inputs/a.csv
    """
    src_key, dst_key = _remote(src), _remote(dst)
    if (src_key is None) == (dst_key is None):
        fail("exactly one of SRC and DST must be dante:KEY (one local, one remote)")
    with client() as api:
        if dst_key is not None:
            local = Path(src)
            if not local.is_file():
                fail(f"no such file: {local}")
            key = dst_key + local.name if (not dst_key or dst_key.endswith("/")) else dst_key
            with transfer(f"↑ {local.name} → {key}", local.stat().st_size) as progress:
                obj = api.upload(local, key, progress=progress)
            out.print(f"dante:{obj.key} ({size(obj.size)})")
        else:
            assert src_key is not None
            target = Path(dst)
            if target.is_dir() or dst.endswith("/"):
                target = target / Path(src_key).name
            info = api.stat(src_key)
            with transfer(f"↓ {src_key} → {target}", info.size) as progress:
                api.download(src_key, target, progress=progress)
            out.print(f"{target} ({size(info.size)})")


def ls(
    prefix: Annotated[str, typer.Argument(help="Only keys under this prefix.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """List your objects.

    Examples:

        dante ls

        dante ls datasets/ --json
    """
    key_prefix = _remote(prefix) if _remote(prefix) is not None else prefix
    with client() as api:
        objects = list(api.iter_objects(key_prefix or ""))
    if as_json:
        print_json(objects)
        return
    table(
        ("KEY", "SIZE", "MODIFIED"),
        [(o.key, size(o.size), when(o.last_modified)) for o in objects],
    )


def rm(
    keys: Annotated[list[str], typer.Argument(help="Keys (or dante:KEY) to delete.")],
) -> None:
    """Delete objects.

    Example:

        dante rm datasets/old.tar dante:results/tmp.txt
    """
    with client() as api:
        for raw in keys:
            remote = _remote(raw)
            key = raw if remote is None else remote
            api.delete(key)
            out.print(f"deleted {key}")
