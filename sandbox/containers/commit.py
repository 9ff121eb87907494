"""Container changes -> image (`sbx commit`): the container's image (or its root filesystem as a
first layer) plus one layer with its changes, diffed by a userns worker mapped like the
container; --change instructions parsed as Dockerfile lines and applied to the config."""
from __future__ import annotations

import json
from typing import Any

from ..build import dockerfile as dfmod
from ..errors import UsageError
from ..image import reference as refs
from ..image.commit import apply_instruction, diff_layer, empty_dir
from ..image.compose import compose
from ..image.store import Store
from ..runtime import userns_worker


def commit_container(c, name: str | None, *, message: str | None = None, author: str | None = None,
                     changes: list[str] = ()) -> Any:
    """A new image: the container's image (or its root filesystem as a first layer) plus one
    layer with the container's changes; -c changes (Dockerfile instructions) applied."""
    store = Store(workers=userns_worker.mapped)
    store.init()
    spec = c.spec
    x = spec["sbx"]
    img = (x.get("image") or {}).get("id")
    base = store.get(img) if img else None
    runtime = json.loads(json.dumps(base.config.get("config") or {})) if base else {}
    runtime.setdefault("Cmd", spec["process"]["args"])
    for ch in changes:
        _apply_change(runtime, ch)
    layers = []
    history = []
    worker = userns_worker.start(x.get("userns"))
    try:
        with store.adding():
            if base is None:
                # A container made from a root filesystem directory: that tree is the first layer.
                lay, _ = diff_layer(worker, store, spec["root"]["path"], [], base=empty_dir(store))
                layers.append(lay)
                history.append({"created_by": f"sbx commit: root filesystem {spec['root']['path']}"})
            lay, _ = diff_layer(worker, store, c.upper, list(x["lowers"]))
            layers.append(lay)
            history.append({"created_by": " ".join(spec["process"]["args"]), "comment": message or ""})
            mdigest = compose(store, base, layers, runtime, history, author=author)
            names = [refs.parse(name).tagged] if name else []
            image = store.add_image(mdigest, names=names)
    finally:
        worker.close()
    return image


def _apply_change(cfg: dict[str, Any], change: str) -> None:
    """One -c/--change: a Dockerfile line, checked as a build would, applied to `cfg`."""
    where = f"--change {change!r}"
    try:  # the change is parsed after a FROM line of ours: its errors name the change, not a line
        instrs = dfmod.parse(f"FROM scratch\n{change}\n", name="--change").stages[0].instructions
    except UsageError as e:
        raise UsageError(f"{where}: {e.msg.split(': ', 1)[-1]}", hint=e.hint) from None
    if len(instrs) != 1:
        raise UsageError(f"{where}: give exactly one instruction per --change",
                         hint="repeat -c for each instruction")
    instr = instrs[0]
    cmd = instr.cmd
    if instr.flags:
        raise UsageError(f"{where}: {cmd} takes no flags in a --change")
    check = {"STOPSIGNAL": dfmod.check_signal, "USER": dfmod.check_user, "EXPOSE": dfmod.parse_ports}
    try:
        for a in instr.args if cmd in check else ():
            check[cmd](a)
    except UsageError as e:
        raise UsageError(f"{where}: {e.msg}", hint=e.hint) from None
    args = [k for p in instr.args for k in dfmod.parse_ports(p)] if cmd == "EXPOSE" else list(instr.args)
    apply_instruction(cfg, cmd, args, instr.json_form, where=where)
