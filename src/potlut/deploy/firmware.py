"""A firmware project for QEMU's mps2-an386 (Cortex-M4): the generated model, a harness
holding a data set's first test images as uint8 pixels, startup code, linker script, a
Makefile with the exact compiler and QEMU lines, and ``firmware.json``, from which
``potlut mcu-run`` builds, runs under QEMU and compares with the Python engine.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from potlut.deploy.c_printer import CModel, Normalization
from potlut.deploy.mcu_build import (
    build_m4,
    m4_commands,
    qemu_command,
    run_qemu,
    tool,
    write_harness,
    write_model,
    write_startup,
)
from potlut.errors import PotlutConfigError

MANIFEST = "firmware.json"
IMAGES = "test_images.npy"


def makefile(name: str) -> str:
    """``make`` builds ``NAME.elf`` with the two compiler lines; ``make run`` prints the logits."""
    cc, link = (shlex.join(c) for c in m4_commands(name))
    return (f"# Cortex-M4 firmware of {name} for QEMU's mps2-an386 (written by potlut export-c)\n"
            f"# make: build {name}.elf   make run: one line of logits per test image\n"
            f"all: {name}.elf\n\n"
            f"{name}.m4.o: {name}.c {name}.h\n\t{cc}\n\n"
            f"{name}.elf: {name}.m4.o main.c startup.c link.ld\n\t{link}\n\n"
            f"run: {name}.elf\n\t{shlex.join(qemu_command(name))} && cat {name}.qemu.txt\n\n"
            f"clean:\n\trm -f {name}.m4.o {name}.su {name}.elf {name}.qemu.txt\n\n"
            ".PHONY: all run clean\n")


def write_firmware(cm: CModel, model: Path, data: str, images: tuple, out: Path,
                   int8_baseline: bool) -> dict:
    """Model, harness on ``images`` (pixels, labels, normalization from :func:`test_images`
    of ``data``), startup, linker script, Makefile and manifest in ``out``."""
    pixels, labels, norm = images
    write_model(cm, out)
    write_harness(cm, pixels, out, pixels=True)
    write_startup(out)
    (out / "Makefile").write_text(makefile(cm.name))
    np.save(out / IMAGES, pixels)
    manifest = {"model": str(Path(model).resolve()), "name": cm.name, "weights": cm.weights,
                "int8_baseline": int8_baseline, "data": data, "images": len(pixels),
                "labels": labels.tolist(), "normalization": {
                    "scale": norm.scale, "mean": list(norm.mean), "std": list(norm.std)}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


@dataclass
class Verification:
    """Firmware under QEMU against the engine on the same test images."""

    images: int
    top1: float  # firmware predictions vs labels, percent
    engine_top1: float
    agree: int  # images whose predicted class equals the engine's
    equal: int  # images whose int32 logits equal the engine's, element for element

    def as_dict(self) -> dict:
        return {"images": self.images, "top1": round(self.top1, 2),
                "engine_top1": round(self.engine_top1, 2), "agree": self.agree,
                "logits_equal": self.equal}


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise PotlutConfigError(f"{folder}: no such folder")
    if not path.is_file():
        raise PotlutConfigError(f"{folder}: no {MANIFEST}; write the firmware with "
                                "potlut export-c MODEL.potlut -o DIR --firmware m4")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise PotlutConfigError(f"{path}: not a firmware manifest ({exc})") from None


def verify(folder: Path, timeout: float = 600) -> Verification:
    """Build ``folder``'s firmware, run it under qemu-system-arm and compare its logits with
    the Python engine's on the same pixels (the engine ``potlut infer`` runs)."""
    from potlut.compress import load
    from potlut.deploy.mcu_int8 import int8_graph
    from potlut.infer import IntEngine, lower

    folder = Path(folder)
    man = read_manifest(folder)
    tool("arm-none-eabi-gcc")
    tool("qemu-system-arm")
    model = Path(man["model"])
    if not model.is_file():
        raise PotlutConfigError(f"{folder / MANIFEST}: model {model} is gone")
    graph = load(model)
    if man["int8_baseline"]:
        graph = int8_graph(graph)
    prog = lower(graph)
    pixels = np.load(folder / IMAGES)
    labels = np.asarray(man["labels"])
    n = man["normalization"]
    norm = Normalization(n["scale"], tuple(n["mean"]), tuple(n["std"]))
    want = IntEngine(prog).run(norm.image(pixels))
    got = run_qemu(build_m4(man["name"], folder), want.shape[1], timeout)
    if got.shape != want.shape:
        raise PotlutConfigError(f"{folder}: the firmware printed {len(got)} rows of logits, "
                                f"expected {len(want)}")
    pred, ref = got.argmax(1), want.argmax(1)
    return Verification(len(pixels), 100.0 * float(np.mean(pred == labels)),
                        100.0 * float(np.mean(ref == labels)), int(np.sum(pred == ref)),
                        int(np.sum((got == want).all(1))))
