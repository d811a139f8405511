"""Peak memory of a block of work: CUDA max allocated, or on CPU the resident set size's high-water mark."""

from __future__ import annotations

import threading

import torch


def _malloc_trim() -> None:
    """Give the heap's free memory back to the OS (glibc), so memory that a block reuses is counted."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the RSS delta may then under-count reused memory
        pass


def _proc_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Peak memory while the block runs: CUDA max allocated, or on CPU the peak resident set size
    above its level at entry. On CPU the heap's free memory is returned to the OS at entry (so memory
    freed by earlier work and reused here is counted) and the kernel's high-water mark is reset
    (``/proc/self/clear_refs``), so the peak is exact and measuring costs nothing while the block runs.
    Where the mark cannot be reset, RSS is sampled every 5 ms instead.

    (An earlier version told glibc to mmap every block over 64 KiB so that frees showed in RSS: that
    made each forward pass 1.4x slower, measured, and so distorted the timings it sat next to.)"""

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"
        self.kind = "cuda_max_allocated" if self.cuda else "cpu_rss_delta"
        self.peak_mb = float("nan")

    def __enter__(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        _malloc_trim()
        self.thread = None
        self.base = _proc_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.hwm = True
        except OSError:
            self.hwm, self.peak, self.stop = False, self.base, threading.Event()

            def sample():
                while not self.stop.wait(0.005):
                    self.peak = max(self.peak, _proc_kb("VmRSS"))

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        if self.hwm:
            peak = _proc_kb("VmHWM")
        else:
            self.stop.set()
            self.thread.join()
            peak = max(self.peak, _proc_kb("VmRSS"))
        self.peak_mb = max(0, peak - self.base) / 2**20
