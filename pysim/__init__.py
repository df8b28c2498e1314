"""Cycle-level co-simulation of the Trio-ViT accelerator (see pysim/README.md)."""
