"""The host side of the accelerator: the driver that starts it through its registers (host/driver.py)."""
