"""Registry of the RTL units: name -> factory(config) returning an Amaranth component.

``make rtl`` (``python -m rtl.build``) and ``make synth`` (``python -m rtl.synth``)
generate / synthesise every entry for every preset; testbenches may use the
same factories. Factories import their module lazily so that importing the
registry stays cheap. To add a unit, define a small factory and add it to
``UNITS`` (keep names short, lowercase, stable: they name build folders).
"""
from __future__ import annotations

from typing import Callable

from arch.config import AccelConfig


def _requant(cfg: AccelConfig):
    from rtl.requant import Requant
    return Requant(cfg)


def _hswish(cfg: AccelConfig):
    from rtl.hswish import Hardswish
    return Hardswish(cfg)


def _residual(cfg: AccelConfig):
    from rtl.residual import ResidualAdd
    return ResidualAdd(cfg)


def _divider(cfg: AccelConfig):
    from rtl.divider import Log2Divider
    return Log2Divider(cfg)


def _avgpool(cfg: AccelConfig):
    from rtl.avgpool import GlobalAvgPool
    return GlobalAvgPool(cfg)


def _layernorm(cfg: AccelConfig):
    from rtl.layernorm import LayerNorm
    return LayerNorm(cfg)


def _mat_engine(cfg: AccelConfig):
    from rtl.mat_engine import MatEngine
    return MatEngine(cfg)


def _rmac_engine(cfg: AccelConfig):
    from rtl.rmac_engine import RmacEngine
    return RmacEngine(cfg)


def _regs(cfg: AccelConfig):
    from rtl.regs import ControlRegsAxi
    return ControlRegsAxi(cfg)


def _dma(cfg: AccelConfig):
    from rtl.dma import DmaAxi
    return DmaAxi(cfg)


def _machine(cfg: AccelConfig):
    from rtl.executors import machine
    return machine(cfg)


UNITS: dict[str, Callable[[AccelConfig], object]] = {
    # compute engines (engineer #1)
    "mat_engine": _mat_engine,
    "rmac_engine": _rmac_engine,
    # integer normalization units (engineer #2)
    "requant": _requant,
    "hswish": _hswish,
    "residual": _residual,
    "divider": _divider,
    "avgpool": _avgpool,
    "layernorm": _layernorm,
    # control: the AXI4-Lite register block of the top level (arch/regmap.py)
    "regs": _regs,
    # the DMA: AXI4 master for weights, parameters and activations (rtl/dma.py)
    "dma": _dma,
    # the accelerator's top level: registers + DMA + sequencer + executors (rtl/machine.py)
    "machine": _machine,
}


def make_unit(name: str, cfg: AccelConfig):
    try:
        factory = UNITS[name]
    except KeyError:
        raise KeyError(f"unknown RTL unit {name!r}; registered units: {', '.join(sorted(UNITS))}") from None
    return factory(cfg)
