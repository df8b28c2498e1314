"""Trio-ViT post-training quantization of EfficientViT on ImageNet-layout data. See `--help`."""
import sys

from quant.cli import main

if __name__ == "__main__":
    sys.exit(main())
