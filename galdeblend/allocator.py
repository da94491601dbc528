"""Keep freed memory inside the process (glibc ``malloc``), for CPU runs.

glibc hands a freed block of more than a threshold (128 KiB at start, adapted up to
32 MiB) back to the kernel, and trims the top of the heap when more than 128 KiB of it
is free. A diffusion step on CPU allocates and frees activation tensors of a few MiB
thousands of times, so each new tensor is mapped again and faulted in page by page,
with every page zeroed by the kernel. Raising both thresholds keeps those pages for
the next tensor: on a Grassy MNIST training and sampling run (2 CPU cores) the minor
page faults fall from 13 M to 0.4 M and the wall time by a quarter, at the same peak
memory; the example deblend, whose time goes to its operators, is not measurably faster
(docs/performance.rst).

This is process-wide, so the command line and the scripts in ``benchmarks/`` and
``data_recipes/`` call :func:`retain_freed_memory` at start; the library itself does
not change the allocator of a program that imports it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["retain_freed_memory"]

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts (half its 64 MiB heap size)
TRIM_THRESHOLD = 2**30  # keep up to 1 GiB of free heap top
TOP_PAD = 2**28  # grow the heap 256 MiB at a time (address space; pages come on use)


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; ``True`` when glibc accepted all three.

    Returns ``False`` (and changes nothing) where the C library is not glibc, e.g. on
    macOS or musl. Blocks above 32 MiB are still mapped and unmapped one by one.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_TOP_PAD, TOP_PAD),
    )
    accepted = [mallopt(parameter, value) == 1 for parameter, value in settings]
    return all(accepted)
