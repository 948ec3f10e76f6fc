"""Buffer arena of an integer program, planned by liveness over its steps: the static
arena of the generated C (``potlut.deploy``) and one image's buffers in the native
runner's arena (``kernels.netplan``).

Every buffer of the integer program (layer input codes, int32 fixed tensors) gets a byte
offset in one arena. Two buffers share bytes only when their live ranges (first write to
last read, in step order) do not overlap; an elementwise step whose input dies at that
step writes its output in place (the residual stream, ReLU, additions), and a reshape is
the same bytes under another name. Offsets are placed greedily, largest buffer first, at
the lowest ``align``-byte-aligned offset free of every overlapping buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from potlut.infer.program import (
    Add,
    Affine,
    Cat,
    InputQuant,
    Layer,
    Pool,
    Program,
    Quantize,
    Relu,
    Reshape,
    Shortcut,
)

ALIGN = 4


def step_io(st) -> tuple[list[str], list[str]]:
    """``(reads, writes)`` buffer names of one program step."""
    if isinstance(st, InputQuant):
        return [], [st.dst]
    if isinstance(st, Layer):
        reads = [st.src] + ([st.residual] if st.residual is not None else [])
        return reads, [b for b in (st.out_fixed, st.out_codes) if b is not None]
    if isinstance(st, Add):
        return [st.a, st.b], [st.dst]
    if isinstance(st, Cat):
        return list(st.srcs), [st.dst]
    if isinstance(st, (Quantize, Affine, Relu, Pool, Shortcut, Reshape)):
        return [st.src], [st.dst]
    raise TypeError(type(st).__name__)


def inplace_pair(st) -> tuple[str, str] | None:
    """``(src, dst)`` when ``dst[i]`` depends only on ``src[i]`` read before the write."""
    if isinstance(st, Layer) and st.residual is not None and st.out_fixed is not None:
        return st.residual, st.out_fixed
    if isinstance(st, (Relu, Affine)):
        return st.src, st.dst
    if isinstance(st, Add):
        return st.a, st.dst
    return None


@dataclass
class ArenaPlan:
    """Where each buffer lives: ``offset[group]`` in the arena, ``group[buffer]``."""

    group: dict[str, str]
    offset: dict[str, int]
    size: dict[str, int]  # bytes per group
    live: dict[str, tuple[int, int]]  # group -> (first step, last step)
    external: set[str] = field(default_factory=set)  # groups outside the arena
    bytes: int = 0

    def lower_bound(self) -> int:
        """Largest sum of simultaneously live arena groups (no placement can do better)."""
        steps = max((b for _, b in self.live.values()), default=0) + 1
        best = 0
        for i in range(steps):
            best = max(best, sum(self.size[g] for g, (a, b) in self.live.items()
                                 if a <= i <= b and g not in self.external))
        return best


def plan_arena(prog: Program, nbytes: dict[str, int], external: set[str],
               align: int = ALIGN) -> ArenaPlan:
    """Place every buffer of ``prog`` (``nbytes[name]`` bytes) in one arena.

    Buffers in ``external`` (the caller's input codes and logits) and everything aliased
    to them get no arena bytes. Every offset and size is a multiple of ``align``.
    """

    def _align(n: int) -> int:
        return (n + align - 1) // align * align

    parent: dict[str, str] = {}

    def find(b: str) -> str:
        while parent.setdefault(b, b) != b:
            b = parent[b]
        return b

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    for st in prog.steps:  # reshapes are views
        if isinstance(st, Reshape):
            union(st.src, st.dst)
    n_steps = len(prog.steps)
    live: dict[str, list[int]] = {}

    def touch(b: str, i: int) -> None:
        g = find(b)
        lo_hi = live.setdefault(g, [i, i])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], i), max(lo_hi[1], i)

    def ranges() -> None:
        live.clear()
        for i, st in enumerate(prog.steps):
            reads, writes = step_io(st)
            for b in reads + writes:
                touch(b, i)
        for o in prog.outputs:
            touch(o, n_steps)

    ranges()
    for i, st in enumerate(prog.steps):
        pair = inplace_pair(st)
        if pair is None:
            continue
        src, dst = find(pair[0]), find(pair[1])
        if (src != dst and live[src][1] == i and live[dst][0] == i
                and nbytes[pair[0]] == nbytes[pair[1]]
                and not ({src, dst} & {find(e) for e in external})):
            union(src, dst)
            ranges()
    groups = {b: find(b) for b in nbytes}
    ext = {find(e) for e in external}
    size: dict[str, int] = {}
    for b, g in groups.items():
        size[g] = max(size.get(g, 0), _align(nbytes[b]))
    placed: list[tuple[int, int, int, int]] = []  # offset, end, first, last
    offset: dict[str, int] = {}
    order = sorted((g for g in size if g not in ext and g in live),
                   key=lambda g: (-size[g], live[g][0]))
    for g in order:
        a, b = live[g]
        clash = sorted((o, e) for o, e, s, t in placed if not (t < a or b < s))
        off = 0
        for o, e in clash:
            if off + size[g] <= o:
                break
            off = max(off, e)
        offset[g] = off
        placed.append((off, off + size[g], a, b))
    total = max((e for _, e, _, _ in placed), default=0)
    return ArenaPlan(groups, offset, size, {g: (v[0], v[1]) for g, v in live.items()},
                     ext, total)
