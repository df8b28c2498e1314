"""The ground floor: one definition of the machine.

Everything here is plain Python and numpy and imports nothing else of the
project; golden/, pysim/, rtl/, quant/ and tb/ stand on it.

* :mod:`arch.config`   the accelerator configuration and its presets
* :mod:`arch.formats`  every integer width and code range, derived from the configuration
* :mod:`arch.ir`       the quantized model on disk (``quantized.pt``): reader, writer, schema
* :mod:`arch.graph`    shapes, MACs and bytes of every IR node (the one walk over the graph)
* :mod:`arch.widths`   worst-case accumulator widths of a graph
* :mod:`arch.timing`   pipeline constants of the engines and units
* :mod:`arch.cost`     one cycle-cost function per machine operation
* :mod:`arch.program`  the machine program: operations, placement, DRAM image, text form
* :mod:`arch.encoding` the program in binary, as the machine fetches it
* :mod:`arch.regmap`   the control registers of the machine (AXI4-Lite)
* :mod:`arch.compiler` IR + configuration -> program
"""
