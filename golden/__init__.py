"""golden/: the bit-exact integer model of the Trio-ViT accelerator (see golden/SPEC.md).

``golden.ops`` holds one function per SPEC operation; rtl/ testbenches call it
as the reference.
"""
