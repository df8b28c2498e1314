"""The accelerator's control and status registers: the one definition of the register map.

rtl/regs.py builds its AXI4-Lite slave from this list (address decode, reset
values, write masks, which fields are sticky, which 64-bit counters snapshot),
host/driver.py finds every register and field here by name, and
docs/register_map.md is generated from it::

    python -m arch.regmap --doc docs/register_map.md      # write the document
    python -m arch.regmap --check docs/register_map.md    # exit 1 when it is stale

Model
-----
* 32-bit registers at word-aligned byte offsets inside a ``WINDOW_BYTES``
  (4 KiB) window; the slave decodes ``ADDR_WIDTH`` address bits and ignores the
  two lowest (byte lanes are selected by WSTRB).
* Every register is a tuple of :class:`Field` (name, bit range, access, reset
  value, meaning, optionally an enumeration). A register's access is the set of
  its fields' accesses (:class:`Access`).
* 64-bit quantities are two registers ``<NAME>_LO`` / ``<NAME>_HI``
  (:attr:`Register.wide`, :attr:`Register.half`). Reading ``_LO`` latches the
  upper half into a per-quantity shadow that ``_HI`` returns, so the pair
  ``LO`` then ``HI`` is one consistent 64-bit value even while it counts.
* Registers marked :attr:`Register.locked` ignore writes while the machine is
  busy (the sequencer may read them at any time during a run).

Extending
---------
Add a :class:`Register` in :func:`_registers` at a free offset of its group
(:data:`GROUPS`), bump :data:`VERSION_MINOR` (:data:`VERSION_MAJOR` when an
existing register moves or changes meaning), regenerate the document, and
give every new RO / W1C field a hardware source in rtl/regs.py (elaboration
fails naming any field without one). A new engine is a name in
:data:`ENGINES`: it gets a live bit in STATUS, a 64-bit busy counter and a bit
of the RTL's ``engine_busy`` input. A new error is a member of
:class:`ErrorCode`.

This module is plain Python (the arch/ ground floor): no numpy, no Amaranth.
"""
from __future__ import annotations

import argparse
import enum
import sys
from dataclasses import dataclass
from pathlib import Path

DESIGN_ID = 0x5456          # "TV": Trio-ViT accelerator
VERSION_MAJOR = 1           # bumped when a register moves or changes meaning
VERSION_MINOR = 0           # bumped when registers or fields are added
ADDR_WIDTH = 12             # AXI4-Lite address bits the slave decodes
WINDOW_BYTES = 1 << ADDR_WIDTH
DATA_BITS = 32

# Engines with a busy input, a live STATUS bit and a 64-bit busy counter, in this order
# (the order of the RTL's ``engine_busy`` bits). MAT / RMAC / UNIT are arch.program.ENGINES.
ENGINES = ("MAT", "RMAC", "UNIT", "DMA")

# Address ranges of the register groups (start, end exclusive): new registers go into
# the free words of their group; 0x100 .. WINDOW_BYTES is reserved for later groups.
GROUPS = {
    "identification and control": (0x000, 0x020),
    "program": (0x020, 0x040),
    "counters": (0x040, 0x100),
}


class Access(str, enum.Enum):
    """How a field responds to the bus."""
    RO = "RO"       # read-only: a constant or a value the hardware drives; writes are ignored
    RW = "RW"       # read/write storage
    W1C = "W1C"     # sticky flag set by the hardware; writing 1 clears it, writing 0 does nothing
    W1P = "W1P"     # write 1: a one-cycle pulse to the hardware; reads as 0

    def __str__(self) -> str:
        return self.value


ACCESS_DOC = {
    Access.RO: "read-only: a constant or a value the hardware drives; writes are ignored (OKAY)",
    Access.RW: "read/write storage; WSTRB selects the bytes written",
    Access.W1C: "sticky flag set by the hardware; writing 1 clears it (a hardware set in the same cycle wins)",
    Access.W1P: "write 1 to act: a one-cycle pulse inside the machine; always reads 0",
}


class ErrorCode(enum.IntEnum):
    """ERROR_CODE.CODE: why the machine stopped with STATUS.ERROR (set by the sequencer)."""
    NONE = 0                # no error since the last start (or since STATUS.ERROR was cleared)
    BAD_OPCODE = 1          # an operation's opcode is not one this machine executes
    ADDR_RANGE = 2          # an address lies outside the DRAM image or an on-chip buffer
    MISALIGNED = 3          # the program base or a DRAM address breaks the program format's alignment
    AXI_SLVERR = 4          # the DMA master got an SLVERR response
    AXI_DECERR = 5          # the DMA master got a DECERR response (no slave at the address)
    PROGRAM_TOO_LONG = 6    # PROGRAM_OPS exceeds what the sequencer can run
    BAD_GEOMETRY = 7        # an operation's shape exceeds this configuration (buffers, kernel limits)
    BAD_PROGRAM = 8         # the program's header does not match (format, version, configuration key)
    INTERNAL = 255          # an internal consistency check of the machine failed


ERROR_CODE_BITS = 8
ERROR_DOC = {
    ErrorCode.NONE: "no error since the last start (or since STATUS.ERROR was cleared)",
    ErrorCode.BAD_OPCODE: "an operation's opcode is not one this machine executes",
    ErrorCode.ADDR_RANGE: "an address lies outside the DRAM image or an on-chip buffer",
    ErrorCode.MISALIGNED: "the program base or a DRAM address breaks the program format's alignment",
    ErrorCode.AXI_SLVERR: "the DMA master got an SLVERR response",
    ErrorCode.AXI_DECERR: "the DMA master got a DECERR response (no slave at the address)",
    ErrorCode.PROGRAM_TOO_LONG: "PROGRAM_OPS exceeds what the sequencer can run",
    ErrorCode.BAD_GEOMETRY: "an operation's shape exceeds this configuration (buffers, kernel limits)",
    ErrorCode.BAD_PROGRAM: "the program's header does not match (format, version, configuration key)",
    ErrorCode.INTERNAL: "an internal consistency check of the machine failed",
}


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    access: Access
    reset: int = 0
    doc: str = ""
    enum: type | None = None

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    @property
    def mask(self) -> int:
        """The field's bits in its register."""
        return ((1 << self.width) - 1) << self.lsb

    @property
    def bits(self) -> str:
        return f"[{self.msb}:{self.lsb}]" if self.width > 1 else f"[{self.lsb}]"


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    doc: str
    fields: tuple[Field, ...]
    group: str
    wide: str | None = None         # the 64-bit quantity this register is half of
    half: str | None = None         # "LO" or "HI"
    locked: bool = False            # writes are ignored while STATUS.BUSY
    constant: bool = False          # the value is fixed when the hardware is generated

    @property
    def access(self) -> str:
        seen = []
        for f in self.fields:
            if f.access.value not in seen:
                seen.append(f.access.value)
        return "/".join(seen)

    @property
    def reset(self) -> int:
        return sum(f.reset << f.lsb for f in self.fields)

    def mask(self, *accesses: Access) -> int:
        """The bits of the fields with one of ``accesses`` (all fields when none is given)."""
        return sum(f.mask for f in self.fields if not accesses or f.access in accesses)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}; fields: "
                       f"{', '.join(f.name for f in self.fields)}")


def config_key(cfg) -> int:
    """CONFIG_KEY's value for an :class:`arch.config.AccelConfig`: the first 8 hex digits of ``cfg.key()``."""
    return int(cfg.key()[:8], 16)


def _word(name: str, offset: int, access: Access, doc: str, group: str, reset: int = 0,
          field_name: str = "VALUE", field_doc: str = "", **kw) -> Register:
    return Register(name, offset, doc, (Field(field_name, 0, 32, access, reset, field_doc or doc),), group, **kw)


def _pair(name: str, offset: int, access: Access, doc: str, group: str, **kw) -> tuple[Register, Register]:
    lo = _word(f"{name}_LO", offset, access, f"{doc}: bits [31:0]", group, wide=name, half="LO",
               field_doc=f"bits [31:0] of {name}", **kw)
    hi = _word(f"{name}_HI", offset + 4, access, f"{doc}: bits [63:32]", group, wide=name, half="HI",
               field_doc=f"bits [63:32] of {name}", **kw)
    return lo, hi


def _registers(key: int | None) -> list[Register]:
    ctl, prg, cnt = GROUPS
    regs = [
        Register("ID", 0x000, "design identifier and register-map version", (
            Field("MINOR", 0, 8, Access.RO, VERSION_MINOR, "register-map minor version (registers added)"),
            Field("MAJOR", 8, 8, Access.RO, VERSION_MAJOR, "register-map major version (incompatible change)"),
            Field("DESIGN", 16, 16, Access.RO, DESIGN_ID, 'design identifier 0x5456 ("TV", Trio-ViT)'),
        ), ctl, constant=True),
        _word("CONFIG_KEY", 0x004, Access.RO, "the configuration the hardware was generated for", ctl,
              reset=key or 0, field_name="KEY", constant=True,
              field_doc="the first 8 hex digits of `AccelConfig.key()` as a 32-bit number"),
        Register("CTRL", 0x008, "control", (
            Field("START", 0, 1, Access.W1P, 0,
                  "write 1 to start the program at PROGRAM_BASE; ignored while STATUS.BUSY. A start clears "
                  "STATUS.DONE, STATUS.ERROR, ERROR_CODE, ERROR_OP, OPS_DONE and every counter"),
            Field("IRQ_EN", 1, 1, Access.RW, 0, "drive the interrupt line with STATUS.DONE | STATUS.ERROR"),
        ), ctl),
        Register("STATUS", 0x00C, "status", (
            Field("BUSY", 0, 1, Access.RO, 0,
                  "a program runs: set by CTRL.START, cleared by the sequencer's done or error; "
                  "also 1 while the sequencer's busy input is"),
            Field("DONE", 1, 1, Access.W1C, 0, "the program finished (sticky)"),
            Field("ERROR", 2, 1, Access.W1C, 0,
                  "the program stopped on an error (sticky); ERROR_CODE says which. Clearing it also "
                  "clears ERROR_CODE and ERROR_OP"),
            Field("IRQ", 3, 1, Access.RO, 0, "the interrupt line's level: CTRL.IRQ_EN & (DONE | ERROR)"),
            *(Field(e, 8 + i, 1, Access.RO, 0, f"the {e} engine's busy input, live")
              for i, e in enumerate(ENGINES)),
        ), ctl),
        Register("ERROR_CODE", 0x010, "the first error since the last start", (
            Field("CODE", 0, ERROR_CODE_BITS, Access.RO, 0, "an ErrorCode (table below)", ErrorCode),
        ), ctl),
        _word("ERROR_OP", 0x014, Access.RO, "OPS_DONE when the error was latched", ctl, field_name="INDEX",
              field_doc="operations completed before the error: the failing operation's index when "
                        "operations complete in order"),
        _word("SCRATCH", 0x018, Access.RW, "free read/write word for the host (bus checks)", ctl),
        *_pair("PROGRAM_BASE", 0x020, Access.RW, "DRAM byte address of the program", prg, locked=True),
        _word("PROGRAM_OPS", 0x028, Access.RW, "number of operations in the program", prg, field_name="COUNT",
              locked=True),
        *_pair("DRAM_BASE", 0x030, Access.RW,
               "DRAM byte address of the DRAM image the program's addresses are relative to", prg, locked=True),
        _word("OPS_DONE", 0x040, Access.RO, "operations completed since the last start", cnt, field_name="COUNT"),
        *_pair("CYCLES", 0x048, Access.RO, "clock cycles with STATUS.BUSY since the last start", cnt),
    ]
    for i, e in enumerate(ENGINES):
        regs += _pair(f"{e}_BUSY", 0x050 + 8 * i, Access.RO,
                      f"clock cycles the {e} engine's busy input was high since the last start", cnt)
    return regs


class RegisterMap:
    """The registers of one build: :func:`register_map` (``cfg`` fixes CONFIG_KEY's value)."""

    def __init__(self, registers, key: int | None = None):
        self.registers: tuple[Register, ...] = tuple(sorted(registers, key=lambda r: r.offset))
        self.key = key
        self._by_name = {r.name: r for r in self.registers}
        self.addr_width = ADDR_WIDTH
        self.window_bytes = WINDOW_BYTES

    def __iter__(self):
        return iter(self.registers)

    def __len__(self) -> int:
        return len(self.registers)

    def __getitem__(self, name: str) -> Register:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no register {name!r} in the register map; registers: "
                           f"{', '.join(self._by_name)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def offset(self, name: str) -> int:
        return self[name].offset

    def at(self, offset: int) -> Register | None:
        """The register at byte ``offset`` (its two low bits ignored), or None."""
        for r in self.registers:
            if r.offset == offset & ~3:
                return r
        return None

    @property
    def wide(self) -> dict[str, tuple[Register, Register]]:
        """64-bit quantities: name -> (LO register, HI register)."""
        out: dict[str, list] = {}
        for r in self.registers:
            if r.wide:
                out.setdefault(r.wide, [None, None])[0 if r.half == "LO" else 1] = r
        return {k: (v[0], v[1]) for k, v in out.items()}

    @property
    def counters(self) -> tuple[str, ...]:
        """The 64-bit RO quantities (counters), in offset order."""
        return tuple(k for k, (lo, _) in self.wide.items() if lo.fields[0].access is Access.RO)

    def encode(self, name: str, **fields: int) -> int:
        """A register value from field values (fields not named are 0)."""
        reg = self[name]
        v = 0
        for k, x in fields.items():
            f = reg.field(k)
            x = int(x)
            if not 0 <= x < (1 << f.width):
                raise ValueError(f"{name}.{k} = {x} does not fit {f.width} bits")
            v |= x << f.lsb
        return v

    def decode(self, name: str, value: int) -> dict[str, int]:
        """Field values of a register value."""
        return {f.name: (value >> f.lsb) & ((1 << f.width) - 1) for f in self[name].fields}


def register_map(cfg=None) -> RegisterMap:
    """The register map; with ``cfg`` (an AccelConfig) CONFIG_KEY's reset value is its key."""
    key = config_key(cfg) if cfg is not None else None
    return RegisterMap(_registers(key), key)


# --- the document ------------------------------------------------------------------------

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def markdown() -> str:
    """docs/register_map.md: every register, field, access kind and error code, with the bus rules."""
    rm = register_map()
    L = []
    add = L.append
    add("# Control and status registers (AXI4-Lite)")
    add("")
    add("<!-- Generated by `python -m arch.regmap --doc docs/register_map.md` from arch/regmap.py; "
        "do not edit. tests/test_regmap.py checks that it is current. -->")
    add("")
    add(f"Register-map version {VERSION_MAJOR}.{VERSION_MINOR}, design identifier 0x{DESIGN_ID:04X}. "
        f"One 32-bit AXI4-Lite slave, {WINDOW_BYTES // 1024} KiB window ({ADDR_WIDTH} address bits), "
        "little-endian. arch/regmap.py is the one definition: rtl/regs.py builds the slave from it and "
        "host/driver.py addresses every register by name through it.")
    add("")
    add("## Bus rules")
    add("")
    add("* Offsets are byte offsets from the slave's base address; the two lowest address bits are ignored "
        "(WSTRB selects the bytes of a write). Bits above the window are not decoded (the interconnect "
        "decodes them).")
    add("* A read or write of an offset with no register (inside the window) gets **SLVERR**; a read returns 0 "
        "with it and a write changes nothing. Every mapped offset answers **OKAY**, also writes to read-only "
        "registers or fields, which are ignored.")
    add("* WSTRB is honoured: a write changes only the RW bytes whose strobe is set, and a W1C / W1P bit acts "
        "only when the strobe of its byte is set.")
    add("* The slave takes one write and one read at a time (AWREADY / WREADY low while a write waits for "
        "its response, ARREADY low while a read response waits); the write and read channels are "
        "independent. Responses come one cycle after the handshakes at the earliest; AWPROT / ARPROT are "
        "ignored.")
    locked = []
    for r in rm:
        if r.locked and (r.wide or r.name) not in locked:
            locked.append(r.wide or r.name)
    add(f"* Registers marked *locked* ({', '.join(locked)}) ignore writes while "
        "STATUS.BUSY, so the sequencer sees them unchanged for the whole run.")
    add("")
    add("Access kinds:")
    add("")
    add("| access | meaning |")
    add("| --- | --- |")
    for a in Access:
        add(f"| {a.value} | {ACCESS_DOC[a]} |")
    add("")
    add("## Running a program")
    add("")
    add("1. Check ID (design 0x5456, major version) and CONFIG_KEY (the configuration the host compiled for: "
        "`int(cfg.key()[:8], 16)`).")
    add("2. Write PROGRAM_BASE_LO/HI, PROGRAM_OPS, DRAM_BASE_LO/HI while STATUS.BUSY is 0.")
    add("3. Write CTRL with START = 1 (and IRQ_EN as wanted). The start pulse clears STATUS.DONE, "
        "STATUS.ERROR, ERROR_CODE, ERROR_OP, OPS_DONE and every counter, and sets STATUS.BUSY. "
        "A START written while STATUS.BUSY is ignored.")
    add("4. Poll STATUS until DONE or ERROR (or wait for the interrupt: the line is "
        "`CTRL.IRQ_EN & (STATUS.DONE | STATUS.ERROR)`, a level; write 1 to STATUS.DONE / STATUS.ERROR to "
        "clear it). The sequencer's done or error clears BUSY.")
    add("5. On ERROR, ERROR_CODE holds the first error's code and ERROR_OP the number of operations completed "
        "before it. Read CYCLES, OPS_DONE and the busy counters for the run's profile.")
    add("")
    add("## 64-bit counters")
    add("")
    add("CYCLES counts the clock cycles STATUS.BUSY is 1, from the start pulse to the sequencer's done "
        "(both included); `<ENGINE>_BUSY` counts the cycles the engine's busy input is high. All are "
        "64 bits wide, cleared by a start, and keep counting while their input is high. Each 64-bit "
        "quantity is a `_LO` / `_HI` pair: **reading `_LO` latches bits [63:32] into a shadow register of "
        "that quantity and reading `_HI` returns the shadow**, so reading LO then HI gives one consistent "
        "value even while it counts (each quantity has its own shadow: pairs of different counters may "
        "interleave). Reading `_HI` without a preceding `_LO` returns the upper half as of the last `_LO` "
        "read (0 after reset). PROGRAM_BASE and DRAM_BASE are plain read/write pairs (no shadow).")
    add("")
    add("## Register summary")
    add("")
    add("| offset | name | access | reset | description |")
    add("| --- | --- | --- | --- | --- |")
    for r in rm:
        reset = "`cfg.key()[:8]`" if r.name == "CONFIG_KEY" else f"0x{r.reset:08X}"
        notes = []
        if r.locked:
            notes.append("locked while busy")
        if r.wide and r.half == "LO" and r.name.replace("_LO", "") in rm.counters:
            notes.append("read latches _HI")
        extra = f" ({'; '.join(notes)})" if notes else ""
        add(f"| 0x{r.offset:03X} | {r.name} | {r.access} | {reset} | {_md_escape(r.doc)}{extra} |")
    add("")
    add("Free words for later registers: the offsets not listed above in each group ("
        + "; ".join(f"{g}: 0x{a:03X}..0x{b - 1:03X}" for g, (a, b) in GROUPS.items())
        + f"); 0x{max(b for _, b in GROUPS.values()):03X}..0x{WINDOW_BYTES - 1:03X} is reserved for new groups.")
    add("")
    add("## Registers")
    for r in rm:
        add("")
        add(f"### 0x{r.offset:03X} {r.name}")
        add("")
        add(_md_escape(r.doc[0].upper() + r.doc[1:]) + ".")
        add("")
        add("| bits | field | access | reset | meaning |")
        add("| --- | --- | --- | --- | --- |")
        for f in sorted(r.fields, key=lambda f: -f.lsb):
            reset = "`cfg.key()[:8]`" if r.name == "CONFIG_KEY" else f"0x{f.reset:X}"
            add(f"| {f.bits} | {f.name} | {f.access} | {reset} | {_md_escape(f.doc)} |")
        used = r.mask()
        if used != (1 << DATA_BITS) - 1:
            add("")
            add("Other bits are reserved: they read 0 and ignore writes.")
    add("")
    add("## Error codes (ERROR_CODE.CODE)")
    add("")
    add("| code | name | meaning |")
    add("| ---: | --- | --- |")
    for c in ErrorCode:
        add(f"| {int(c)} | {c.name} | {_md_escape(ERROR_DOC[c])} |")
    add("")
    add("Codes not listed are reserved; the sequencer sets them, the register block latches the first one "
        "after a start.")
    add("")
    add("## Ports")
    add("")
    add("rtl/regs.py `ControlRegs` is the register block: an AXI4-Lite slave member `s_axi` "
        "(rtl/axi.py `axi_lite_signature`) plus the machine side: outputs `start` (one-cycle pulse), "
        "`irq` (level), `program_base` (64), `program_ops` (32), `dram_base` (64); inputs `busy`, `done` "
        "(pulse), `error` (pulse) with `error_code` (8), `op_done` (pulse), `engine_busy` "
        f"(one bit per engine: {', '.join(e.lower() for e in ENGINES)}). Its clock domain is `sync` "
        "(synchronous, active-high reset).")
    add("")
    add("A top level presents Xilinx-convention port names, which Vivado's IP packager infers as an "
        "AXI4-Lite slave interface with its clock and reset: flat signature members `aclk`, `aresetn` and "
        "`s_axi_awaddr`, `s_axi_awvalid`, ... (rtl/axi.py `flat_members`, wired to the nested interface by "
        "`flat_interface` + `wiring.connect`) and its `sync` domain driven from them "
        "(rtl/axi.py `axi_clock_domain`: clock from `aclk`, reset = `~aresetn`). rtl/regs.py "
        "`ControlRegsAxi` is that wrapper for the register block alone (the testbench's device).")
    add("")
    add("## Host access")
    add("")
    add("host/driver.py `Registers` (synchronous) and `AsyncRegisters` (coroutines) use this map by name "
        "over a 32-bit MMIO backend: `DevMem(base)` maps /dev/mem at the slave's base address (a board "
        "running Linux, as root), `PynqMMIO(pynq.MMIO(base, 0x1000))` wraps PYNQ's MMIO, and "
        "`CocotbAxiLite(master)` wraps cocotbext-axi's `AxiLiteMaster` in the testbench.")
    add("")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="The register map: write or check docs/register_map.md.")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--doc", type=Path, help="write the register-map document here")
    g.add_argument("--check", type=Path, help="exit 1 when this document differs from the generated text")
    g.add_argument("--print", action="store_true", help="print the document")
    args = ap.parse_args(argv)
    text = markdown()
    if args.print:
        sys.stdout.write(text)
        return 0
    if args.doc:
        args.doc.write_text(text)
        print(f"wrote {args.doc}")
        return 0
    current = args.check.read_text() if args.check.is_file() else ""
    if current != text:
        print(f"{args.check} is stale: regenerate with `python -m arch.regmap --doc {args.check}`")
        return 1
    print(f"{args.check} is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
