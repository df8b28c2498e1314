"""AXI signatures and the Xilinx port-naming hook shared by the top level and its blocks.

Inside the design an AXI port is one nested member, e.g. rtl/regs.py's
``s_axi: In(axi_lite_signature(12))``, connected with ``wiring.connect``.
``amaranth.back.verilog.convert`` names a component's top-level ports by
joining the signature path with ``__``, so a nested member comes out as
``s_axi__awaddr``; Vivado's IP packager infers AXI interfaces (and their
clock and reset) from the Xilinx convention ``s_axi_awaddr``, ``aclk``,
``aresetn``. convert has no renaming hook for components (only an explicit
``ports=`` dict, which tb/harness.py and rtl/build.py do not pass), so the
top level declares its boundary *flat*:

    class Top(wiring.Component):
        def __init__(self, cfg):
            super().__init__({
                "aclk": In(1), "aresetn": In(1),
                **flat_members("s_axi", In(axi_lite_signature(REGMAP_ADDR_WIDTH))),
                **flat_members("m_axi", Out(axi4_signature(cfg.axi_addr_bits, cfg.axi_data_bits, cfg.axi_id_bits))),
                "irq": Out(1),
            })

        def elaborate(self, platform):
            m = Module()
            axi_clock_domain(m, self.aclk, self.aresetn)    # `sync` = aclk, reset = ~aresetn
            m.submodules.regs = regs = ControlRegs(cfg)
            wiring.connect(m, flat_interface(self, "s_axi", In(axi_lite_signature(...))), regs.s_axi)

Each flat member is a one-level path (``("s_axi_awaddr",)``), so the Verilog
port is exactly ``s_axi_awaddr``. Because the top level defines the ``sync``
domain itself, convert adds no ``clk`` / ``rst`` ports (rtl/regs.py ``ControlRegsAxi`` is this
pattern for the register block alone; tests/test_regmap.py checks its Verilog ports).

Vivado's packager associates ``aclk`` with the ``s_axi`` / ``m_axi`` interfaces and ``aresetn`` (active
low by its name) by these names. An interrupt port is not reliably inferred from its name: the
packaging script should declare ``irq`` as an interrupt (``ipx::infer_bus_interface irq
xilinx.com:signal:interrupt_rtl:1.0``, SENSITIVITY LEVEL_HIGH) -- not testable here.
"""
from __future__ import annotations

from amaranth import ClockDomain, ClockSignal, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

# AXI response codes (xRESP)
OKAY, EXOKAY, SLVERR, DECERR = 0, 1, 2, 3


def axi_lite_signature(addr_width: int, data_width: int = 32) -> wiring.Signature:
    """AXI4-Lite as the master sees it (``awaddr`` is Out); a slave port is ``In(axi_lite_signature(...))``.

    Member names are the AXI signal names without the interface prefix, in the
    order of the specification's channels: AW, W, B, AR, R.
    """
    if data_width not in (32, 64):
        raise ValueError(f"AXI4-Lite data width must be 32 or 64, got {data_width}")
    return wiring.Signature({
        "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1), "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


# AXI4 burst types (AxBURST) and the full-width size code of a data width (AxSIZE = log2(bytes per beat))
BURST_FIXED, BURST_INCR, BURST_WRAP = 0, 1, 2


def axi_size(data_width: int) -> int:
    """AxSIZE of a beat as wide as the bus: log2 of its bytes."""
    return (data_width // 8).bit_length() - 1


def axi4_signature(addr_width: int, data_width: int, id_width: int = 1) -> wiring.Signature:
    """AXI4 (full) as the master sees it (``awaddr`` is Out); a slave port is ``In(axi4_signature(...))``.

    Member names are the AXI signal names without the interface prefix, channels in the order AW, W,
    B, AR, R. The optional signals kept are the ones a DMA master drives with constants and Vivado's
    packager maps: AxLOCK, AxCACHE, AxPROT, AxQOS; no AxREGION and no USER signals. IDs are present
    (cocotbext-axi's models require them) with at least one bit.
    """
    if data_width < 8 or data_width > 1024 or data_width & (data_width - 1):
        raise ValueError(f"AXI4 data width must be a power of two in 8..1024, got {data_width}")
    if id_width < 1:
        raise ValueError(f"AXI4 ID width must be at least 1, got {id_width}")

    def addr_channel(x):
        return {f"{x}id": Out(id_width), f"{x}addr": Out(addr_width), f"{x}len": Out(8), f"{x}size": Out(3),
                f"{x}burst": Out(2), f"{x}lock": Out(1), f"{x}cache": Out(4), f"{x}prot": Out(3),
                f"{x}qos": Out(4), f"{x}valid": Out(1), f"{x}ready": In(1)}

    return wiring.Signature({
        **addr_channel("aw"),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1), "wvalid": Out(1),
        "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        **addr_channel("ar"),
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
        "rready": Out(1),
    })


def flat_members(prefix: str, member: wiring.Member) -> dict[str, wiring.Member]:
    """The port members of ``member`` (e.g. ``In(axi_lite_signature(12))``) as flat members named
    ``<prefix>_<name>``, with the flows they have on the component that declares them."""
    if not member.is_signature:
        raise TypeError(f"flat_members needs an interface member (In/Out of a Signature), got {member!r}")
    out = {}
    for path, m in member.signature.members.flatten():
        if m.is_port:
            out["_".join((prefix, *map(str, path)))] = m
    return out


class _FlatView:
    """An interface object over a component's flat ``<prefix>_<name>`` members, for ``wiring.connect``."""

    def __init__(self, signature: wiring.Signature, attrs: dict):
        self.signature = signature
        for k, v in attrs.items():
            setattr(self, k, v)


def flat_interface(obj, prefix: str, member: wiring.Member):
    """The flat members ``flat_members(prefix, member)`` of ``obj`` seen from inside ``obj`` as one
    interface, ready for ``wiring.connect(m, flat_interface(self, "s_axi", member), block.s_axi)``.

    Inside the component the flows are reversed (a top-level input drives the design), so the view's
    signature is ``member.signature.flip()``. Only single-level signatures (AXI channels) are supported.
    """
    sig = member.signature
    attrs = {}
    for path, m in sig.members.flatten():
        if len(path) != 1:
            raise ValueError(f"flat_interface supports one-level signatures only; {prefix} has {path}")
        attrs[path[0]] = getattr(obj, f"{prefix}_{path[0]}")
    return _FlatView(sig.flip(), attrs)


def axi_clock_domain(m, aclk, aresetn, domain: str = "sync") -> ClockDomain:
    """Define ``domain`` in module ``m``, clocked by ``aclk`` and reset (synchronously, as AXI requires)
    while ``aresetn`` is low. Submodules using ``domain`` inherit it; no clk/rst ports are added."""
    cd = ClockDomain(domain)
    m.domains += cd
    m.d.comb += [ClockSignal(domain).eq(aclk), ResetSignal(domain).eq(~aresetn)]
    return cd
