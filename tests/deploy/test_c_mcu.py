"""Generated C on an emulated Cortex-M4 (qemu-system-arm, mps2-an386): equal to the Python
engine on the digits CNN and on the .potlut written by `potlut run` (from raw pixels through
NAME_quantize_input), also through the commands alone (run -> export-c --firmware m4 ->
mcu-run == infer); the low-bit layer functions hold no multiply instruction; export-c and
mcu-run refuse user errors in one line with exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from potlut.compress import load, save
from potlut.deploy.c_printer import print_c
from potlut.deploy.mcu_build import (
    build_host,
    build_m4,
    compile_m4_object,
    disassembly,
    m4_instructions,
    m4_size,
    multiplies,
    run_host,
    run_qemu,
    write_harness,
    write_model,
)
from potlut.firmware_data import digits_normalization, digits_pixels
from potlut.infer import IntEngine, lower, op_counts
from potlut.infer.engine import quantize_input

from ..data.fixtures import write_cifar10
from ..infer.helpers import random_graph

ARM = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm"))
    and not os.environ.get("CI"), reason="arm-none-eabi-gcc / qemu-system-arm not installed")
N = 64


def potlut(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "potlut", *args], capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits model written by `potlut run` (short schedule) and its C from export-c."""
    out = tmp_path_factory.mktemp("mcu_run")
    proc = potlut("run", "--epochs", "4", "--qat-epochs", "4", "--out", str(out / "run"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = potlut("export-c", str(out / "run" / "model.potlut"), "-o", str(out / "c"),
                  "--name", "digits", "--data", "digits")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@ARM
def test_digits_cnn_on_cortex_m4_equals_engine(tmp_path) -> None:
    prog = lower(random_graph("small_cnn", (1, 8, 8), 4, seed=4))
    torch.manual_seed(5)
    x = (torch.randn(N, 1, 8, 8) * 1.5).numpy()
    for weights in ("packed", "shuff"):
        d = tmp_path / weights
        cm = print_c(prog, "net", weights)
        write_model(cm, d)
        write_harness(cm, quantize_input(x, prog.steps[0].act), d)
        got = run_qemu(build_m4(cm, d), cm.out_size, timeout=300)
        np.testing.assert_array_equal(got, IntEngine(prog).run(x))


@ARM
def test_potlut_run_file_on_cortex_m4_from_pixels(trained) -> None:
    """Pixels -> NAME_quantize_input -> NAME_run under QEMU == the engine on the data set's
    float images, so the predictions are those of `potlut infer`."""
    path = trained / "run" / "model.potlut"
    prog = lower(load(path))
    pixels, labels = digits_pixels()
    pixels, labels = pixels[:N], labels[:N]
    x = digits_normalization().image(pixels)
    from potlut import data

    bundle_x = torch.stack([data.load("digits").test[i][0] for i in range(N)]).numpy()
    np.testing.assert_array_equal(x, bundle_x)  # the folded normalization is the data set's
    want = IntEngine(prog).run(x)
    assert np.mean(want.argmax(1) == labels) > 0.8  # trained, not chance
    cm = print_c(prog, "digits", "packed", digits_normalization())
    assert cm.source == (trained / "c" / "digits.c").read_text()  # the CLI printed the same
    d = trained / "m4"
    write_model(cm, d)
    write_harness(cm, pixels, d, pixels=True)
    np.testing.assert_array_equal(run_host(build_host(cm, d), cm.out_size), want)
    got = run_qemu(build_m4(cm, d), cm.out_size, timeout=300)
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def firmware(trained):
    """`potlut export-c --firmware m4` on the trained file, every digits test image."""
    proc = potlut("export-c", str(trained / "run" / "model.potlut"), "-o", str(trained / "fw"),
                  "--name", "digits", "--data", "digits", "--firmware", "m4", "--images", "1000",
                  "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["firmware"]["images"] == 540  # capped at the test split
    return trained / "fw"


@ARM
def test_commands_alone_give_the_predictions_of_potlut_infer(trained, firmware) -> None:
    """run -> export-c --firmware m4 -> mcu-run: the Cortex-M4 build under QEMU predicts
    what `potlut infer` predicts on all 540 digits test images, logits equal to the engine's."""
    proc = potlut("mcu-run", str(firmware), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    proc = potlut("infer", str(trained / "run" / "model.potlut"), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    want = json.loads(proc.stdout)
    assert got["images"] == want["images"] == 540
    assert got["logits_equal"] == got["agree"] == 540
    assert got["top1"] == got["engine_top1"] == round(want["int_top1"], 2)
    assert got["top1"] > 80  # trained, not chance
    # the Makefile holds the same build: `make run` prints the same 540 rows of logits
    qemu_rows = (firmware / "digits.qemu.txt").read_text()
    make = subprocess.run(["make", "-s", "-C", str(firmware), "clean", "run"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert make.returncode == 0, make.stderr[-2000:]
    assert make.stdout == qemu_rows and len(qemu_rows.splitlines()) == 540


@ARM
def test_mcu_run_refuses_user_errors_in_one_line(firmware, tmp_path, monkeypatch) -> None:
    _one_line_error(["mcu-run", str(tmp_path / "nope")], "no such folder")
    _one_line_error(["mcu-run", str(tmp_path)], "no firmware.json; write the firmware with")
    (tmp_path / "firmware.json").write_text("{")
    _one_line_error(["mcu-run", str(tmp_path)], "not a firmware manifest")
    _one_line_error(["export-c", str(firmware.parent / "run" / "model.potlut"), "-o",
                     str(tmp_path / "c"), "--firmware", "m0"], "--firmware must be m4")
    arm_only = tmp_path / "bin"  # the arm toolchain without QEMU
    arm_only.mkdir()
    (arm_only / "arm-none-eabi-gcc").symlink_to(shutil.which("arm-none-eabi-gcc"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    _one_line_error(["mcu-run", str(firmware)], "arm-none-eabi-gcc not found; install it")
    monkeypatch.setenv("PATH", str(arm_only))
    _one_line_error(["mcu-run", str(firmware)], "qemu-system-arm not found; install it")


@ARM
def test_low_bit_layers_hold_no_multiply_instruction(tmp_path) -> None:
    for name, shape, bits in [("small_cnn", (1, 8, 8), 3), ("resnet20", (3, 32, 32), 4)]:
        for weights in ("packed", "shuff"):
            cm = print_c(lower(random_graph(name, shape, bits, seed=1)), "net", weights)
            d = tmp_path / f"{name}{weights}"
            write_model(cm, d)
            funcs = disassembly(compile_m4_object(cm, d))
            assert len(cm.low_bit_functions) == (2 if name == "small_cnn" else 18)
            for fn in cm.low_bit_functions:
                assert len(funcs[fn]) > 50, fn  # the function is there, with its loops
                assert multiplies(funcs[fn]) == [], fn
            # the check can see multiplies: the 8-bit ends and the requantization have them
            for fn in cm.int8_functions + ["potlut_requant"]:
                assert multiplies(funcs[fn]), fn


@ARM
def test_cortex_m4_instruction_count_covers_the_work(tmp_path) -> None:
    """QEMU -icount counts NAME_run on the Cortex-M4: at least a load and an add for each
    table read and int8 MAC, and S-Huff decoding costs instructions on top of packed codes."""
    prog = lower(random_graph("small_cnn", (1, 8, 8), 4, seed=4))
    ops = op_counts(prog)["plut"]
    work = ops["table_reads"] + ops["int8_macs"]
    assert work == 147456 + 9856
    got = {}
    for weights in ("packed", "shuff"):
        cm = print_c(prog, "net", weights)
        write_model(cm, tmp_path / weights)
        write_harness(cm, np.zeros((1, cm.in_size), np.int8), tmp_path / weights)
        got[weights] = m4_instructions(cm, tmp_path / weights)
    assert 2 * work <= got["packed"] < got["shuff"], got


@ARM
def test_cortex_m4_sizes_are_the_object_sections(tmp_path) -> None:
    prog = lower(random_graph("small_cnn", (1, 8, 8), 4, seed=4))
    cm = print_c(prog, "net")
    write_model(cm, tmp_path)
    size = m4_size(compile_m4_object(cm, tmp_path))
    assert size.bss == cm.arena_bytes  # the one static arena is all the RAM besides stack
    assert size.data == 0 and 0 < size.stack < 512
    n_weights = sum(s.w_codes.size for s in prog.layers())
    packed = sum((s.w_codes.size * (s.bits_w if s.mode == "plut" else 8) + 7) // 8
                 for s in prog.layers())
    assert cm.weight_bytes == packed and size.rodata > packed and n_weights > 0


def _one_line_error(args: list[str], msg: str) -> None:
    from typer.testing import CliRunner

    from potlut.cli.main import app

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("potlut: error:") and msg in lines[0], lines


def test_firmware_images_are_the_loaders_test_inputs(tmp_path) -> None:
    """The harness's uint8 pixels of a CIFAR folder, through the normalization folded into
    NAME_quantize_input, are exactly the loader's float test inputs, with its labels."""
    from potlut import data
    from potlut.firmware_data import test_images

    spec = f"cifar10:{write_cifar10(tmp_path)}"
    pixels, labels, norm = test_images(spec, 3)
    test = data.load(spec).test
    assert pixels.dtype == np.uint8 and pixels.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(norm.image(pixels),
                                  torch.stack([test[i][0] for i in range(10)]).numpy())
    np.testing.assert_array_equal(labels, [int(test[i][1]) for i in range(10)])
    ok = tmp_path / "gray.potlut"
    save(random_graph("small_cnn", (1, 8, 8), 4, seed=2), ok)
    _one_line_error(["export-c", str(ok), "-o", str(tmp_path / "c"), "--data", spec,
                     "--firmware", "m4"], "gives 3 channels, the model has 1")


def test_export_c_refuses_what_it_cannot_emit_exactly(tmp_path) -> None:
    lq = tmp_path / "lqnet.potlut"
    save(random_graph("small_cnn", (1, 8, 8), 4, seed=2, scheme="lqnet_layer"), lq)
    _one_line_error(["export-c", str(lq), "-o", str(tmp_path / "c")],
                    "rounded codebooks (approximated scheme)")
    lsq = tmp_path / "lsq.potlut"
    save(random_graph("small_cnn", (1, 8, 8), 4, seed=2, scheme="lsq"), lsq)
    _one_line_error(["export-c", str(lsq), "-o", str(tmp_path / "c")],
                    "'lsq' cannot run integer-only")
    ok = tmp_path / "ok.potlut"
    save(random_graph("small_cnn", (3, 8, 8), 4, seed=2), ok)
    _one_line_error(["export-c", str(ok), "-o", str(tmp_path / "c")],
                    "gives 1 channels, the model has 3")
    _one_line_error(["export-c", str(ok), "-o", str(tmp_path / "c"), "--weights", "zip"],
                    "--weights must be packed or shuff")
    assert not (tmp_path / "c").exists()
