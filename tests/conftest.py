"""Suite-wide settings: one torch thread per test process.

`make test` runs two pytest workers on two cores; more threads per worker
oversubscribe the cores and slow tiny-model tests down by orders of magnitude.
"""

import torch


def pytest_configure(config):
    torch.set_num_threads(1)
