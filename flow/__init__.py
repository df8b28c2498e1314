"""flow/: the end-to-end flows a user runs, which cross the other packages.

Nothing of the project imports flow/; flow/ may import everything: quant/
(quantize), golden/ (the integer model and the program's functional executor),
arch/ (compile), pysim/ (price).
"""
