"""Every engine backend equals the int64 reference element for element, each selected by
name: the whole-network C runner with AVX-512, AVX2, scalar (and NEON under qemu-aarch64),
with its shift-add and its table-lookup kernels, and numba; on the digits CNN and ResNet20
at 2..5 bits. A backend this CPU supports (by its flags, or anywhere on CI) must run."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from functools import cache

import numpy as np
import pytest
import torch

from potlut.infer import IntEngine, lower, run_reference
from potlut.infer.kernels.native import (
    ISAS,
    NativeNet,
    build_harness,
    supported_isas,
)
from potlut.infer.kernels.netplan import OP_LAYER

from .helpers import random_graph

CI = bool(os.environ.get("CI"))
CASES = [("small_cnn", (1, 8, 8)), ("resnet20", (3, 32, 32))]
BITS = [2, 3, 4, 5]


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def expected_isas() -> set[str]:
    """Instruction sets the runner must offer here: by the CPU's flags (and scalar on CI)."""
    flags, want = cpu_flags(), set()
    if {"avx2", "fma", "bmi2"} <= flags:
        want.add("avx2")
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vbmi"} <= flags:
        want.add("avx512")
    if CI or want:
        want.add("scalar")
    return want


def require(isa: str) -> None:
    """Skip an instruction set this machine lacks; fail if it should have run here."""
    if isa in supported_isas():
        return
    if isa in expected_isas():
        pytest.fail(f"the {isa} runner did not build or load on a CPU that supports it")
    pytest.skip(f"this CPU does not run {isa}")


@cache
def case(name: str, in_shape: tuple[int, int, int], bits: int):
    prog = lower(random_graph(name, in_shape, bits, seed=bits))
    torch.manual_seed(bits)
    n = 1 if name == "resnet20" and bits == 5 else 3  # per-product rounding: slow reference
    x = (torch.randn(n, *in_shape) * 1.5).numpy()
    ref = run_reference(prog, x, keep=True)
    logits = np.asarray(ref[prog.outputs[0]])
    assert logits.shape == (n, 10) and np.abs(logits).max() > 2**prog.frac_bits // 100
    return prog, x, {k: np.asarray(v) for k, v in ref.items()}


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("name,in_shape", CASES)
@pytest.mark.parametrize("kernels", ["auto", "lut"])
@pytest.mark.parametrize("isa", ["avx512", "avx2", "scalar"])
def test_native_equals_reference(isa, kernels, name, in_shape, bits) -> None:
    require(isa)
    prog, x, ref = case(name, in_shape, bits)
    net = NativeNet(prog, isa, threads=1, kernels=kernels)
    env = net.run(x, keep=True)
    shared = [k for k in env if k in ref]
    assert len(shared) >= len(prog.layers()) + 1  # every layer's input codes, the logits
    for k in shared:
        np.testing.assert_array_equal(env[k], ref[k], err_msg=f"{isa} {kernels} {k}")
    out = net.run(x)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, ref[prog.outputs[0]])
    used = set(net.kernels())
    # the P-LUT layers ran on this ISA's own kernels (not a fallback)
    plut = {"avx512": {"vpermb", "vpermw"}, "avx2": {"vpshufb8", "vpshufb16"},
            "scalar": {"gather"}}[isa]
    if kernels == "auto" and bits <= 4:
        assert used & {"shift-add", "shift-add8"}, used
    elif bits <= 4 or isa == "scalar":
        assert used & plut, used
    if isa == "avx512" and kernels == "lut":
        want = {2: "vpermb", 3: "vpermb", 4: "vpermw"}.get(bits)
        assert want is None or want in used, used


def assert_one_image_calls_equal(net, x: np.ndarray, ref: dict) -> None:
    """Each image run alone equals the reference in every buffer both keep (the plan whose
    buffers all have bytes of their own) and in its logits (the compact plan, buffers
    sharing bytes by liveness)."""
    for i in range(len(x)):
        env = net.run(x[i:i + 1], keep=True)
        shared = [k for k in env if k in ref]
        assert shared
        for k in shared:
            np.testing.assert_array_equal(env[k], ref[k][i:i + 1], err_msg=f"image {i} {k}")
        np.testing.assert_array_equal(net.run(x[i:i + 1]).reshape(1, -1),
                                      ref[net.prog.outputs[0]][i:i + 1].reshape(1, -1))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 6, 6), (1, 4, 4)])
def test_one_image_small_maps_equal_reference(bits, in_shape) -> None:
    """Calls on one image: AVX-512 runs the small maps (digits' 4x4 and 2x2 layers; 3x3,
    2x2 and 1x1 on smaller inputs: position counts that are not whole blocks) with output
    channels across the lanes (lut-oc), and still equals the reference."""
    require("avx512")
    prog, x, ref = case("small_cnn", in_shape, bits)
    net = NativeNet(prog, "avx512", threads=1)
    assert_one_image_calls_equal(net, x, ref)
    used = net.kernels(one_image=True)
    if bits <= 4:  # power-of-two weights with exact products: shift-add applies
        assert used.count("lut-oc") == 2, used
    else:
        assert "lut-oc" not in used, used
    assert "lut-oc" not in net.kernels()  # batches keep the pixel-vector kernels
    lut = NativeNet(prog, "avx512", threads=1, kernels="lut")
    assert "lut-oc" not in lut.kernels(one_image=True)
    np.testing.assert_array_equal(lut.run(x[:1]), ref[prog.outputs[0]][:1])


def test_one_image_call_after_the_arena_grew_writes_only_the_new_arena() -> None:
    """A one-image call after a batch call that reallocated the scratch arena must not write
    into the old one (its prepared arguments held the freed address: that overwrote other
    arrays allocated since)."""
    prog, x, ref = case("resnet20", (3, 32, 32), 4)
    net = NativeNet(prog, "c", threads=2)
    first = net.run(x[:1])
    before = net._arena.size
    net.run(x, prof=np.zeros(len(net.plan.op_labels), np.int64))  # two threads' arenas
    assert net._arena.size > before
    others = [np.full(1 << 20, 7, np.uint8) for _ in range(64)]  # where the old arena was
    np.testing.assert_array_equal(net.run(x[:1]), first)
    np.testing.assert_array_equal(first, ref[prog.outputs[0]][:1])
    assert all((a == 7).all() for a in others)


@pytest.mark.parametrize("width", [12, 20])
def test_one_image_channel_blocks_not_a_multiple_of_64(width) -> None:
    """The small-map kernel's 64-channel blocks (layers above 32 output channels) with
    partial blocks: SmallCNN of width 12 (12/24/48 channels: one block of 48 lanes) and 20
    (20/40/80: a full block and one of 16 lanes), every layer's codes equal the reference."""
    require("avx512")
    from potlut.models.small_cnn import SmallCNN
    from potlut.nn import QuantSpec, calibrate, convert
    from potlut.nn.export import export_graph

    torch.manual_seed(width)
    q = convert(SmallCNN(10, 1, width=width), QuantSpec(bits=4))
    calibrate(q, torch.randn(16, 1, 8, 8))
    with torch.no_grad():
        for m in q.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    prog = lower(export_graph(q.eval(), (1, 8, 8)))
    x = (torch.randn(4, 1, 8, 8) * 1.5).numpy()
    ref = {k: np.asarray(v) for k, v in run_reference(prog, x, keep=True).items()}
    net = NativeNet(prog, "avx512", threads=1)
    assert net.kernels(one_image=True).count("lut-oc") == 2
    assert_one_image_calls_equal(net, x, ref)


@pytest.mark.parametrize("bits", [3, 4])
def test_numba_equals_reference(bits) -> None:
    prog, x, ref = case("resnet20", (3, 32, 32), bits)
    np.testing.assert_array_equal(IntEngine(prog, "numba").run(x), ref[prog.outputs[0]])
    prog, x, ref = case("small_cnn", (1, 8, 8), bits)
    np.testing.assert_array_equal(IntEngine(prog, "numba").run(x), ref[prog.outputs[0]])


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("isa", ["avx512", "avx2", "scalar"])
def test_interleaved_sub_batches_equal_reference(isa, bits) -> None:
    """ResNet20's 8x8 layers run sub-batches of 4 images with their rows interleaved (the
    shift-add kernels over chunks of input channels): 6 images make one full sub-batch and
    a ragged one of 2 (interleaved, slots left empty), and one image alone runs as before;
    every layer's codes equal the reference, with both kernel formulations and 2 threads."""
    require(isa)
    prog, x3, _ = case("resnet20", (3, 32, 32), bits)
    x = np.concatenate([x3, x3[::-1]])
    ref = {k: np.asarray(v) for k, v in run_reference(prog, x, keep=True).items()}
    assert sum(len(st.out_shape) == 3 and st.out_shape[2] == 8 for st in prog.layers()) == 6
    for kernels, threads in (("auto", 1), ("lut", 1), ("auto", 2)):
        net = NativeNet(prog, isa, threads=threads, kernels=kernels)
        env = net.run(x, keep=True)
        for k in (k for k in env if k in ref):
            np.testing.assert_array_equal(env[k], ref[k], err_msg=f"{kernels} {threads} {k}")
    assert_one_image_calls_equal(NativeNet(prog, isa, threads=1), x[:2], ref)


@cache
def unsigned_case(bits: int):
    """ResNet20 with unsigned activations (every bit on the magnitude: 4-bit IOS-PoT values
    reach 2^14), three images, and the reference."""
    prog = lower(random_graph("resnet20", (3, 32, 32), bits, seed=bits, act_signed=False))
    torch.manual_seed(bits)
    x = (torch.randn(3, 3, 32, 32) * 1.5).numpy()
    return prog, x, {k: np.asarray(v) for k, v in run_reference(prog, x, keep=True).items()}


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("isa", ["avx512", "avx2", "scalar"])
def test_unsigned_activations_equal_reference(isa, bits) -> None:
    """Unsigned activations: at 4 bits the shift-add groups sum in int32 (int16 sums would
    hold one tap of 2^14), at 3 bits in int16; every layer equals the reference, on batches
    and on single images (phased where the ISA takes them)."""
    require(isa)
    prog, x, ref = unsigned_case(bits)
    net = NativeNet(prog, isa, threads=1)
    env = net.run(x, keep=True)
    for k in (k for k in env if k in ref):
        np.testing.assert_array_equal(env[k], ref[k], err_msg=k)
    assert_one_image_calls_equal(net, x[:2], ref)
    want = "shift-add32" if bits == 4 else "shift-add"
    assert sum(k == want for k in net.kernels()) == 18, net.kernels()  # all but stem and fc


def test_neon_under_qemu_unsigned_activations_equal_reference(neon_harness, tmp_path) -> None:
    """NEON on the int32 shift-add sums (unsigned 4-bit activations)."""
    prog, x, ref = unsigned_case(4)
    got = run_neon(neon_harness, tmp_path, host_net(prog), x)
    np.testing.assert_array_equal(got, ref[prog.outputs[0]].reshape(len(x), -1))


def phased_layers(plan) -> int:
    """Layers of a plan whose single images take phased rows (op field 69)."""
    return sum(k > 0 for k in layer_field(plan, 69))


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("isa", ["avx512", "avx2", "scalar"])
def test_phased_rows_on_8x8_maps_equal_reference(isa, bits) -> None:
    """One image on ResNet20's five stride-1 8x8 layers runs phased rows (netplan.
    _phased_rows: the accumulators come out in a row order of their own and are put back);
    every layer's codes equal the reference on each instruction set, given a phased plan
    (AVX-512's default, built by permutes; row by row elsewhere) or a plain one."""
    require(isa)
    prog, x, ref = case("resnet20", (3, 32, 32), bits)
    for phased in (True, False):
        net = NativeNet(prog, isa, threads=1, phased=phased)
        assert phased_layers(net.plan) == (5 if phased else 0)
        assert_one_image_calls_equal(net, x[:2], ref)
    assert phased_layers(NativeNet(prog, isa, threads=1).plan) == (5 if isa == "avx512" else 0)


def layer_field(plan, k: int) -> list[int]:
    """Op field ``k`` of every layer of a plan."""
    w, i, out = plan.words, int(plan.words[10]), []
    for _ in range(int(w[3])):
        if w[i] == OP_LAYER:
            out.append(int(w[i + 2 + k]))
        i += int(w[i + 1])
    return out


def test_requant32_only_where_exact_and_bounded() -> None:
    """The 32-bit epilogue (acc * K + C, no clamps) is taken where M = K * 2^R and no input
    can bring |acc * K + C| plus the residual to 2^31 - 1; else the 64-bit one."""
    from types import SimpleNamespace

    from potlut.infer.kernels.netplan import I32MAX, _requant32

    lp = SimpleNamespace(M=np.array([15 << 20, 11 << 20]), B=np.array([-(3 << 15) - 1, 5 << 15]),
                         R=np.array([15, 15]))
    K, C, bound = _requant32(lp, np.array([1000, 2000]), 7)
    assert K.tolist() == [480, 352] and C.tolist() == [-4, 5]  # floor((-(3 << 15) - 1) / 2^15)
    assert bound == max(1000 * 480 + 4, 2000 * 352 + 5) + 7
    assert _requant32(lp, np.array([1000, I32MAX // 352]), 0)[2] == (I32MAX // 352) * 352 + 5
    assert _requant32(lp, np.array([1000, I32MAX // 352 + 1]), 0) is None  # could saturate
    assert _requant32(lp, np.array([1000, 2000]), I32MAX - 100) is None  # the residual
    lp.M = np.array([15 << 20, (11 << 20) + 1])  # not a multiple of 2^R
    assert _requant32(lp, np.array([1000, 2000]), 0) is None


@cache
def plain_bn_resnet20():
    """ResNet20 converted, calibrated and compressed with BatchNorm as initialized: its
    requantization multipliers are whole multiples of 2^R (as in bench_infer's model)."""
    import tempfile
    from pathlib import Path

    from potlut import models
    from potlut.compress import load
    from potlut.nn import QuantSpec, calibrate, convert
    from potlut.nn.export import compress_model

    torch.manual_seed(0)
    q = convert(models.build("resnet20", 10, 3), QuantSpec(bits=4))
    calibrate(q, torch.randn(16, 3, 32, 32))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        compress_model(q.eval(), (3, 32, 32), Path(d) / "r.potlut")
        prog = lower(load(Path(d) / "r.potlut"))
    x = (torch.randn(2, 3, 32, 32) * 1.5).numpy()
    return prog, x, {k: np.asarray(v) for k, v in run_reference(prog, x, keep=True).items()}


@pytest.mark.parametrize("isa", ["avx512", "avx2", "scalar"])
def test_requant32_epilogue_equals_reference(isa) -> None:
    """Where every requantized layer (the stem and the conv2s, with residuals) takes the
    32-bit epilogue, every layer's codes and fixed outputs equal the reference."""
    require(isa)
    prog, x, ref = plain_bn_resnet20()
    net = NativeNet(prog, isa, threads=1)
    rq = [k >= 0 for k in layer_field(net.plan, 70)]
    thr = [k != 0 for k in layer_field(net.plan, 39)]
    assert sum(rq) == 11 and all(a != b for a, b in zip(rq, thr, strict=True))
    env = net.run(x, keep=True)
    for k in (k for k in env if k in ref):
        np.testing.assert_array_equal(env[k], ref[k], err_msg=k)
    assert_one_image_calls_equal(net, x, ref)


@pytest.mark.parametrize("in_shape", [(1, 120, 8), (1, 160, 8)])
def test_tall_8_wide_maps_interleave_only_within_the_buffer(in_shape) -> None:
    """An 8-wide map interleaves 4 images only while their accumulators fit the runner's
    de-interleaving buffer (4 x 120 x 8 positions do, 4 x 160 x 8 do not): both equal the
    reference on a batch of 5 (one interleaved sub-batch and one image)."""
    isa = supported_isas()[0] if supported_isas() else pytest.skip("no C runner here")
    prog = lower(random_graph("small_cnn", in_shape, 4, seed=1))
    x = (torch.randn(5, *in_shape) * 1.5).numpy()
    np.testing.assert_array_equal(NativeNet(prog, isa, threads=1).run(x),
                                  run_reference(prog, x))


def test_threads_split_the_batch_exactly() -> None:
    isa = supported_isas()[-1] if supported_isas() else pytest.skip("no C runner here")
    prog, x, ref = case("small_cnn", (1, 8, 8), 4)
    xs = np.concatenate([x] * 24)  # 72 images: groups of 32 (the last ragged), 1-4 threads
    want = np.concatenate([ref[prog.outputs[0]]] * 24)
    for threads in (1, 2, 4):
        np.testing.assert_array_equal(NativeNet(prog, isa, threads=threads).run(xs), want)
    eng = IntEngine(prog, "c", threads=2)
    np.testing.assert_array_equal(eng.run(xs), want)
    assert eng.backend.name in ISAS and eng.native.threads == 2


def test_pooled_workers_serve_many_calls_concurrent_callers_and_a_forked_child() -> None:
    """The runner keeps its worker threads between calls (spinning, then asleep): every call
    of a long mixed sequence, calls from several Python threads at once (one gets the pool,
    the others start threads of their own) and a forked child (which has none of the
    parent's workers) give the reference's logits."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    isa = supported_isas()[-1] if supported_isas() else pytest.skip("no C runner here")
    prog, x, ref = case("small_cnn", (1, 8, 8), 4)
    xs = np.concatenate([x] * 24)
    want = np.concatenate([ref[prog.outputs[0]]] * 24)
    nets = {t: NativeNet(prog, isa, threads=t) for t in (1, 2, 3, 4)}
    for t in (2, 4, 3, 2, 1, 4, 2) * 4:
        np.testing.assert_array_equal(nets[t].run(xs), want)
    mine = threading.local()  # a net (its arena) per calling thread

    def call(_):
        if not hasattr(mine, "net"):
            mine.net = NativeNet(prog, isa, threads=2)
        return mine.net.run(xs)

    with ThreadPoolExecutor(4) as ex:
        for got in ex.map(call, range(40)):
            np.testing.assert_array_equal(got, want)
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if its two-thread calls are exact
        ok = all(np.array_equal(nets[2].run(xs), want) for _ in range(5))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    np.testing.assert_array_equal(nets[4].run(xs), want)


def test_every_arena_is_64_byte_aligned_and_the_runner_checks_it() -> None:
    """Each image of a group and each thread's arena start on a 64-byte line: the scratch
    once left ResNet20's stride at 48 mod 64, and the 2nd thread's misaligned vector loads
    made it 33 % slower. The runner refuses a misaligned stride or arena (-1)."""
    isa = supported_isas()[-1] if supported_isas() else pytest.skip("no C runner here")
    for bits in (3, 4):
        prog, x, ref = case("resnet20", (3, 32, 32), bits)
        for compact in (True, False):
            net = NativeNet(prog, isa, threads=2, compact=compact)
            assert net.stride % 64 == 0 and net.plan.words[14] % 64 == 0
            np.testing.assert_array_equal(net.run(x), ref[prog.outputs[0]])
    xs = np.ascontiguousarray(x, np.float32)
    out = np.empty((len(x), ref[prog.outputs[0]][0].size), np.int32)
    outs = (ctypes.c_void_p * 1)(out.ctypes.data)
    for base, stride in ((net._base, net.stride + 16), (net._base + 16, net.stride)):
        assert net._run(net._words, xs.ctypes.data, 1, outs, base, stride, 0, net._isa_id,
                        1, None) == -1
    assert net._run(net._words, xs.ctypes.data, 1, outs, net._base, net.stride, 0,
                    net._isa_id, 1, None) == 0
    np.testing.assert_array_equal(out[0], ref[prog.outputs[0]][0].reshape(-1))


def test_native_runner_refuses_nan_and_infinity() -> None:
    """The C runner checks the input itself (the engine skips numpy's check for it)."""
    from potlut.errors import PotlutDataError

    isa = supported_isas()[-1] if supported_isas() else pytest.skip("no C runner here")
    prog, x, ref = case("small_cnn", (1, 8, 8), 4)
    net = NativeNet(prog, isa, threads=2)
    for bad in (np.nan, np.inf, -np.inf):
        xb = x.copy()
        xb[2, 0, 7, 7] = bad  # the last value of the batch
        for keep in (False, True):
            with pytest.raises(PotlutDataError, match="NaN or infinite"):
                net.run(xb, keep=keep)
        with pytest.raises(PotlutDataError, match="NaN or infinite"):
            IntEngine(prog, isa).run(xb[2:])
    np.testing.assert_array_equal(net.run(x), ref[prog.outputs[0]])  # still usable


def test_unknown_or_missing_backend_is_a_config_error() -> None:
    from potlut.errors import PotlutConfigError

    prog, _, _ = case("small_cnn", (1, 8, 8), 4)
    with pytest.raises(PotlutConfigError, match="unknown backend"):
        IntEngine(prog, "avx1024")
    missing = [k for k in ISAS if k not in supported_isas()]
    if supported_isas() and missing:
        with pytest.raises(PotlutConfigError, match="cannot run"):
            IntEngine(prog, missing[0])


def _qemu_tools() -> tuple[str | None, str | None]:
    return shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")


@pytest.fixture(scope="module")
def neon_harness(tmp_path_factory):
    cc, qemu = _qemu_tools()
    if cc is None or qemu is None:
        if CI:
            pytest.fail("aarch64-linux-gnu-gcc and qemu-aarch64 are needed on CI")
        pytest.skip("no aarch64 cross compiler / qemu-aarch64 here")
    return build_harness(tmp_path_factory.mktemp("neon") / "plut_net"), qemu


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("name,in_shape", CASES)
@pytest.mark.parametrize("kernels", ["auto", "lut"])
def test_neon_under_qemu_equals_reference(neon_harness, tmp_path, kernels, name, in_shape,
                                          bits) -> None:
    prog, x, ref = case(name, in_shape, bits)
    got = run_neon(neon_harness, tmp_path, host_net(prog, kernels=kernels), x)
    np.testing.assert_array_equal(got, ref[prog.outputs[0]].reshape(len(x), -1))


@pytest.mark.parametrize("bits", [3, 4])
def test_neon_under_qemu_phased_rows_equal_reference(neon_harness, tmp_path, bits) -> None:
    """NEON given a phased plan (one image on ResNet20's 8x8 maps) equals the reference."""
    prog, x, ref = case("resnet20", (3, 32, 32), bits)
    net = host_net(prog, phased=True)
    assert phased_layers(net.plan) == 5
    got = run_neon(neon_harness, tmp_path, net, x[:1])
    np.testing.assert_array_equal(got, ref[prog.outputs[0]][:1].reshape(1, -1))


def host_net(prog, **kw) -> NativeNet:
    """A runner on this machine, for its plan (the bytes the NEON harness runs)."""
    if not supported_isas():
        pytest.skip("no host C compiler to build the plan with")
    return NativeNet(prog, "scalar" if "scalar" in supported_isas() else "c", threads=1, **kw)


def run_neon(neon_harness, tmp_path, net: NativeNet, x: np.ndarray) -> np.ndarray:
    """The NEON harness's logits of ``x`` under qemu-aarch64, one row an image."""
    exe, qemu = neon_harness
    (tmp_path / "plan.bin").write_bytes(net.plan.words.tobytes())
    (tmp_path / "x.bin").write_bytes(np.ascontiguousarray(x, np.float32).tobytes())
    subprocess.run([qemu, str(exe), str(tmp_path / "plan.bin"), str(tmp_path / "x.bin"),
                    str(len(x)), str(ISAS["neon"]), str(tmp_path / "y.bin")], check=True,
                   timeout=600)
    return np.fromfile(tmp_path / "y.bin", np.int32).reshape(len(x), -1)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "scalar"])
def test_input_codes_at_thresholds(isa) -> None:
    """Pixels exactly on the input quantizer's midpoints (either sign, and just beside them;
    uneven midpoints) get the reference's codes on every instruction set (AVX-512: eight at
    a time)."""
    import copy
    import dataclasses

    require(isa)
    prog = copy.deepcopy(case("small_cnn", (1, 8, 8), 4)[0])
    # uneven midpoints (same count), so that the first guess misses and the steps run
    m = np.asarray(prog.steps[0].act.mids, np.float64)
    mids = m[0] + (m - m[0]) ** 2 / (m[-1] - m[0]) + np.arange(m.size) * 1e-3
    mids = mids.astype(np.float32).astype(np.float64)  # float32 pixels can equal them
    assert np.all(np.diff(mids) > 0)
    prog.steps[0] = dataclasses.replace(
        prog.steps[0], act=dataclasses.replace(prog.steps[0].act, mids=mids))
    vals = np.concatenate([mids, -mids, np.nextafter(mids.astype(np.float32), 0),
                           np.nextafter(mids.astype(np.float32), 9), [0.0, -0.0, 1e9, -1e9]])
    vals = vals.astype(np.float32)
    n = -(-vals.size // 64)
    x = np.resize(vals, n * 64).reshape(n, 1, 8, 8)
    ref = run_reference(prog, x, keep=True)
    net = NativeNet(prog, isa, threads=1)
    for i in range(n):
        env = net.run(x[i:i + 1], keep=True)
        k = prog.steps[0].dst
        np.testing.assert_array_equal(env[k], np.asarray(ref[k])[i:i + 1])
