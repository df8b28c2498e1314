"""Amaranth RTL of the Trio-ViT accelerator. Importing this package does not import Amaranth."""
