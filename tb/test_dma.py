"""The DMA (rtl/dma.py) under Verilator: cocotbext-axi's AxiRam on the Xilinx-named AXI4 master port
(DmaAxi: aclk, aresetn, m_axi_*), random back-pressure on all five channels and on the machine-side
streams, a random read latency, two fault ranges answering SLVERR / DECERR. Checks (tb/dma_cocotb.py):
back-to-back random writes and reads of every length kind (1 byte .. over 256 beats, zero, across
4 KiB boundaries), checked byte for byte against a Python model of the memory; reads and writes at
once; the command checks (MISALIGNED, ADDR_RANGE outside the window), SLVERR / DECERR on reads and
writes: the error code, no hang, what each stream delivered, and a clean restart after ``clear``;
the AXI rules on every cycle (see the cocotb module). The stall-free case also measures throughput.

The non-simulation tests check the Xilinx port names and the configuration's AXI fields."""
import pytest

from arch.config import PRESETS, AccelConfig
from tb.harness import run_cocotb

BASE = 0x12_3456_0000               # above 4 GiB: the upper address bits matter
REGION = 64 * 1024                  # the model's bytes; the fault ranges and the window follow it
THROUGHPUT_BYTES = 64 * 1024

CASES = {
    # name: (configuration, pauses, read latency range, seed)
    "no_pauses": (PRESETS["tiny"], 0.0, (0, 0), 1),
    "random_pauses": (PRESETS["tiny"], 0.3, (0, 20), 5),
    # 64-bit bus: a 4 KiB page is 512 beats, so the 256-beat limit cuts bursts too
    "axi64_pauses": (PRESETS["tiny"].replace(name="tiny_axi64", axi_data_bits=64), 0.2, (0, 8), 7),
    # 512-bit bus: a page is 64 beats
    "axi512_pauses": (PRESETS["tiny"].replace(name="tiny_axi512", axi_data_bits=512), 0.2, (0, 8), 9),
}
SLOW = {"axi64_pauses", "axi512_pauses"}        # one more Verilator build each


@pytest.mark.sim
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_dma_axi(case):
    from rtl.dma import MAX_BURSTS, DmaAxi
    cfg, pauses, latency, seed = CASES[case]
    stall_free = pauses == 0 and latency == (0, 0)
    res = run_cocotb(unit="dma", make=lambda: DmaAxi(cfg), config=cfg, module="tb.dma_cocotb", case=case,
                     params={"pauses": pauses, "latency": list(latency), "base": BASE, "region": REGION,
                             "n_cmds": 24, "max_bursts": MAX_BURSTS, "throughput": stall_free,
                             "throughput_bytes": THROUGHPUT_BYTES},
                     seed=seed)
    checks = ["check_writes", "check_reads", "check_concurrent", "check_errors"]
    assert res["checks"] == checks + (["check_throughput"] if stall_free else [])
    st = res["stats"]
    B = cfg.axi_data_bits // 8
    assert st["max_len"] == min(256, 4096 // B), st          # full-length bursts happened
    assert st["page_cut"] > 0, st                            # bursts cut at a page boundary
    assert st["max_out_r"] > 1, st                           # more than one read burst in flight
    if stall_free:
        tp = res["throughput"]
        print(f"\nDMA throughput ({cfg.axi_data_bits}-bit, {THROUGHPUT_BYTES} B, no pauses): {tp}")
        # one beat per cycle is the ceiling; the burst gaps and the command's start cost little
        assert tp["read"]["bytes_per_cycle"] > 0.95 * B, tp
        assert tp["write"]["bytes_per_cycle"] > 0.95 * B, tp


def test_dma_ports():
    """The Xilinx-named boundary: aclk, aresetn, m_axi_* with the configuration's widths."""
    import re

    from rtl.build import module_name
    from rtl.dma import DmaAxi
    from tb.harness import to_verilog
    cfg = PRESETS["tiny"]
    text = to_verilog(DmaAxi(cfg), module_name("dma", cfg))
    top = text[:text.index("endmodule")]
    ports = {name: int(hi) + 1 if hi else 1
             for d, hi, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);", top, re.M)}
    A, D = cfg.axi_addr_bits, cfg.axi_data_bits
    want = {"aclk": 1, "aresetn": 1, "m_axi_awaddr": A, "m_axi_awlen": 8, "m_axi_awsize": 3, "m_axi_awburst": 2,
            "m_axi_awid": cfg.axi_id_bits, "m_axi_awcache": 4, "m_axi_awprot": 3, "m_axi_wdata": D,
            "m_axi_wstrb": D // 8, "m_axi_wlast": 1, "m_axi_bresp": 2, "m_axi_araddr": A, "m_axi_arlen": 8,
            "m_axi_rdata": D, "m_axi_rresp": 2, "m_axi_rlast": 1, "m_axi_rready": 1,
            "window_base": A, "window_size": A + 1, "error_code": 8, "busy": 1, "wr_done": 1, "clear": 1}
    for name, width in want.items():
        assert ports.get(name) == width, (name, ports.get(name), width)
    assert not any(p.startswith("m_axi__") or p in ("clk", "rst") for p in ports), sorted(ports)


@pytest.mark.parametrize("bits", [32, 512])
def test_dma_elaborates_other_widths(bits):
    """The narrowest and widest buses the configuration allows generate (the 256-beat cap and the
    4 KiB page cut take different branches: 1024 and 64 beats per page)."""
    from rtl.dma import DmaAxi
    from tb.harness import to_verilog
    cfg = PRESETS["tiny"].replace(name=f"tiny_axi{bits}", axi_data_bits=bits)
    text = to_verilog(DmaAxi(cfg), f"dma_axi{bits}")
    assert f"output [{bits - 1}:0] m_axi_wdata;" in text and f"output [{bits // 8 - 1}:0] m_axi_wstrb;" in text


@pytest.mark.parametrize("field,value", [("axi_data_bits", 96), ("axi_data_bits", 16), ("axi_data_bits", 1024),
                                         ("axi_addr_bits", 31), ("axi_addr_bits", 65), ("axi_id_bits", 0),
                                         ("axi_data_bits", True)])
def test_axi_config_fields_refused(field, value):
    with pytest.raises(ValueError, match=field):
        AccelConfig(**{field: value})
