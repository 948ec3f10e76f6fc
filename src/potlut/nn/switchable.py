"""Switchable precision: one set of weights that runs at any of several bit-widths.

Every quantized layer keeps one weight and bias for all widths; its quantizers (clipping
scales) and every BatchNorm (affine and running statistics) get one copy per width, as in
switchable-precision networks (Any-Precision, AdaBits; Sun et al. 2021 build on them).
``model.set_bits(b)`` selects width ``b``; ``model.at_bits(b)`` is a plain converted model at
that width (what :func:`potlut.nn.export.export_graph` writes). A quantizer is shared when
its spec is the same at every width and its input does not depend on the width: the weights
of the 8-bit first/last layers and the first layer's input (the image).

Swapping: ``set_bits(b, swap={unit: b2})`` runs the listed units at ``b2``; a unit is one
quantized layer with the BatchNorms that follow it up to the next layer. A swapped-in
BatchNorm normalizes with batch statistics but leaves its running statistics alone, so a
teacher branch's statistics only ever see its own width's activations.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from potlut.errors import PotlutConfigError
from potlut.nn.convert import QuantSpec, calibrate, convert
from potlut.nn.layers import QUANT_LAYERS, quant_layers
from potlut.quant.base import Exported, Quantizer
from potlut.quant.iospot import check_bits


class SwitchableQuantizer(Quantizer):
    """One quantizer per bit-width behind the :class:`Quantizer` interface of the active one."""

    def __init__(self, branches: dict[int, Quantizer]) -> None:
        first = min(branches)
        super().__init__(branches[first].bits)
        self.branches = nn.ModuleDict({str(b): q for b, q in sorted(branches.items())})
        self.active = str(first)

    def select(self, bits: int) -> None:
        self.active = str(bits)
        self.bits = self.current.bits

    @property
    def current(self) -> Quantizer:
        return self.branches[self.active]

    @property
    def scheme(self) -> str:  # type: ignore[override]
        return self.current.scheme

    @property
    def signed(self) -> bool:
        return bool(getattr(self.current, "signed", True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.current(x)

    def export(self, x: torch.Tensor) -> Exported:
        return self.current.export(x)

    def levels(self) -> torch.Tensor:
        return self.current.levels()

    def extra_repr(self) -> str:
        return f"widths={list(self.branches)}, active={self.active}"


class SwitchableBatchNorm2d(nn.Module):
    """One ``BatchNorm2d`` per bit-width; ``frozen`` (a swapped-in teacher unit) keeps the
    running statistics of the active branch untouched while training."""

    def __init__(self, bn: nn.BatchNorm2d, widths: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleDict({str(b): copy.deepcopy(bn) for b in widths})
        self.active = str(widths[0])
        self.frozen = False

    def select(self, bits: int, frozen: bool = False) -> None:
        self.active, self.frozen = str(bits), frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.branches[self.active]
        if self.frozen and self.training:
            return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
        return bn(x)


def parse_widths(bits: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"2,3,4,8"`` / ``[2, 3, 4, 8]`` / ``4`` -> sorted distinct widths (each 2..8)."""
    if isinstance(bits, str):
        try:
            items = [int(s) for s in bits.split(",") if s.strip()]
        except ValueError:
            raise PotlutConfigError(f"bits must be integers separated by commas, got {bits!r}"
                                    ) from None
    elif isinstance(bits, int):
        items = [bits]
    else:
        items = list(bits)
    if not items:
        raise PotlutConfigError("bits: at least one bit-width is needed")
    return tuple(sorted({check_bits(b) for b in items}))


MAX_POT_BITS = 5  # IOS-PoT above this has levels (2^-126 at 8 bits) no integer engine holds


def width_scheme(scheme: str, bits: int) -> str:
    """The scheme of the middle layers at width ``bits``: IOS-PoT up to 5 bits, 8-bit style
    fixed point with a power-of-two step above (the engine's int8 path runs it)."""
    return "fixedpoint" if scheme == "iospot" and bits > MAX_POT_BITS else scheme


def _specs(spec: QuantSpec, widths: Sequence[int]) -> list[QuantSpec]:
    return [dataclasses.replace(spec, bits=b, act_bits=None, scheme=width_scheme(spec.scheme, b))
            for b in widths]


class SwitchableModel(nn.Module):
    """A converted model whose quantizers and BatchNorms switch with :meth:`set_bits`.

    ``net`` is the quantized model (layer names as in the original); ``widths`` the
    bit-widths it holds, ascending. Build it with :func:`convert_switchable`.
    """

    def __init__(self, net: nn.Module, widths: Sequence[int]) -> None:
        super().__init__()
        self.net = net
        self.widths = tuple(widths)
        self.bits = self.widths[-1]
        self.set_bits(self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def units(self) -> list[list[nn.Module]]:
        """Switchable modules grouped by unit: a quantized layer's quantizers and the
        BatchNorms after it, up to the next quantized layer (registration order)."""
        groups: list[list[nn.Module]] = []
        for m in self.net.modules():
            if isinstance(m, QUANT_LAYERS):
                groups.append([q for q in (m.weight_quant, m.act_quant)
                               if isinstance(q, SwitchableQuantizer)])
            elif isinstance(m, SwitchableBatchNorm2d):
                if not groups:
                    groups.append([])
                groups[-1].append(m)
        return groups

    def set_bits(self, bits: int, swap: dict[int, int] | None = None) -> SwitchableModel:
        """Run at width ``bits``; units listed in ``swap`` (index -> width) run at their own."""
        if bits not in self.widths:
            raise PotlutConfigError(f"bit-width {bits} is not one of this model's {self.widths}")
        swap = swap or {}
        for i, group in enumerate(self.units()):
            b = swap.get(i, bits)
            for m in group:
                if isinstance(m, SwitchableBatchNorm2d):
                    m.select(b, frozen=b != bits)
                else:
                    m.select(b)
        self.bits = bits
        return self

    @torch.no_grad()
    def at_bits(self, bits: int) -> nn.Module:
        """A plain converted model (its own copy) at width ``bits``: no switchable modules,
        the layer names of the original model, ready for ``export_graph``."""
        was = self.bits
        self.set_bits(bits)
        try:
            net = copy.deepcopy(self.net)
        finally:
            self.set_bits(was)
        for name, m in list(net.named_modules()):
            if isinstance(m, QUANT_LAYERS):
                for attr in ("weight_quant", "act_quant"):
                    q = getattr(m, attr)
                    if isinstance(q, SwitchableQuantizer):
                        setattr(m, attr, q.current)
            elif isinstance(m, SwitchableBatchNorm2d):
                _replace(net, name, m.branches[m.active])
        return net.train(self.training)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def _same(a: Quantizer, b: Quantizer) -> bool:
    return (type(a) is type(b) and a.bits == b.bits
            and getattr(a, "signed", True) == getattr(b, "signed", True))


def convert_switchable(model: nn.Module, spec: QuantSpec | None = None,
                       widths: Sequence[int] = (2, 3, 4, 8)) -> SwitchableModel:
    """Quantized copy of ``model`` switchable between ``widths`` (``spec.bits`` is ignored).

    Each width is converted with ``spec`` at that width (its scheme per
    :func:`width_scheme`); the weights are the model's (shared), the quantizers and
    BatchNorms are per width (shared where they cannot differ). A layer normalizes its
    weight (METHODS §1.1) if any width's scheme does, so every width sees the same tensor.
    """
    spec = spec or QuantSpec()
    widths = parse_widths(widths)
    nets = [convert(model, s) for s in _specs(spec, widths)]
    base = nets[-1]
    per_width = [dict(quant_layers(n)) for n in nets]
    first = next(iter(per_width[-1]), None)
    for name, layer in quant_layers(base):
        layer.weight_norm = any(pw[name].weight_norm for pw in per_width)
        for attr in ("weight_quant", "act_quant"):
            qs = {b: getattr(pw[name], attr) for b, pw in zip(widths, per_width, strict=True)}
            if any(q is None for q in qs.values()):
                continue
            shared = all(_same(q, qs[widths[-1]]) for q in qs.values()) and (
                attr == "weight_quant" or name == first)
            if not shared:
                setattr(layer, attr, SwitchableQuantizer(qs))
    for name, m in list(base.named_modules()):
        if isinstance(m, nn.BatchNorm2d):
            _replace(base, name, SwitchableBatchNorm2d(m, widths))
    return SwitchableModel(base, widths)


@torch.no_grad()
def calibrate_switchable(model: SwitchableModel, batch: torch.Tensor) -> None:
    """:func:`potlut.nn.convert.calibrate` at every width (scales, then BN statistics).

    ``calibrate`` resets every BatchNorm it finds, so each width's statistics are kept
    aside after its own pass and put back at the end.
    """
    kept = {}
    for b in model.widths:
        model.set_bits(b)
        calibrate(model.net, batch)
        kept[b] = {n: copy.deepcopy(m.branches[m.active].state_dict())
                   for n, m in model.net.named_modules() if isinstance(m, SwitchableBatchNorm2d)}
    for b, states in kept.items():
        for n, state in states.items():
            model.net.get_submodule(n).branches[str(b)].load_state_dict(state)
    model.set_bits(model.widths[-1])


def quantize_switchable(model: nn.Module, spec: QuantSpec | None = None,
                        widths: Sequence[int] = (2, 3, 4, 8),
                        calibration: torch.Tensor | None = None) -> SwitchableModel:
    """:func:`convert_switchable`, then :func:`calibrate_switchable` on ``calibration``."""
    sm = convert_switchable(model, spec, widths)
    if calibration is not None:
        calibrate_switchable(sm, calibration)
    return sm


def export_multibit(model: SwitchableModel, in_shape: tuple[int, ...], path,
                    meta: dict | None = None, coder: str = "shuff",
                    widths: Sequence[int] | None = None) -> dict:
    """Write every width (or ``widths``) of ``model`` into one multi-bit .potlut file.

    Returns the sizes: ``file_bytes``, ``separate_bytes`` (each width as its own file,
    encoded here to compare), ``per_width`` and ``shared`` (stage-1 bytes) and ``nested``
    (layers whose codes are stored as a function of the base width's).
    """
    from potlut.compress import encode
    from potlut.compress.multibit import save_multi
    from potlut.nn.export import export_graph

    widths = parse_widths(widths if widths is not None else model.widths)
    graphs = {}
    for b in widths:
        graphs[b] = export_graph(model.at_bits(b).eval(), in_shape,
                                 {**(meta or {}), "bits": b})
    info = save_multi(graphs, path, coder)
    separate = {b: len(encode(g, coder)[0]) for b, g in graphs.items()}
    return {"file_bytes": info.file_bytes, "separate_bytes": sum(separate.values()),
            "separate": separate, "base_bits": info.base_bits, "base_bytes": info.base_bytes,
            "per_width": info.own_bytes, "shared": info.shared_bytes,
            "nested": info.nested, "path": str(path)}
