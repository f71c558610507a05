"""Pretraining's images: mini-world renderings in an on-device uint8 pool that batches are drawn from.

Images are `miniworld.generate(world_seed, i, size=resolution, kinds=kinds, held_out=False)`
(held-out kind/colour/background triples never appear in base pretraining).
  * num_workers > 0: a torch DataLoader whose workers render chunks of CHUNK consecutive
    indices without end (`RenderStream`); a feeder thread hands finished chunks over and each
    training step moves the ready ones into the pool (a ring), so training never waits for
    rendering once the pool holds a first few batches. `next_index` is where a resumed stream starts.
  * num_workers == 0: a pre-rendered cache of `capacity` images (indices 0..n-1).
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

CHUNK = 64  # images per rendered DataLoader item


def render_images(world_seed: int, first: int, n: int, resolution: int, kinds) -> np.ndarray:
    """uint8 [n, 3, R, R]: mini-world images first..first+n-1 (plain style, no held-out triples)."""
    from generators.miniworld import generate

    out = np.empty((n, 3, resolution, resolution), dtype=np.uint8)
    for j in range(n):
        img = generate(world_seed, first + j, size=resolution, kinds=kinds, held_out=False).image
        out[j] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return out


class RenderStream(torch.utils.data.IterableDataset):
    """Endless chunks of CHUNK consecutive images; worker k renders chunks k, k+W, k+2W, ...

    The DataLoader hands chunks back in round-robin worker order, i.e. in index order.
    """

    def __init__(self, world_seed, resolution, kinds, start_index, chunk=CHUNK):
        super().__init__()
        self.world_seed, self.resolution, self.kinds = world_seed, resolution, tuple(kinds)
        self.start_index, self.chunk = int(start_index), int(chunk)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:
            torch.set_num_threads(1)
        b = wid
        while True:
            first = self.start_index + b * self.chunk
            yield torch.from_numpy(render_images(self.world_seed, first, self.chunk, self.resolution, self.kinds))
            b += nw


class ImagePool:
    """uint8 images on the training device; `batch(n)` draws n at random as floats in [-1, 1]."""

    def __init__(self, device, resolution, capacity, num_workers, world_seed, kinds, start_index, chunk=CHUNK):
        self.device, self.chunk = device, chunk
        self.num_workers = num_workers
        self.start_index = int(start_index)
        self.chunks_in = 0
        self.filled = 0
        self.pos = 0
        self._thread = None
        self._error = None
        if num_workers == 0:
            imgs = torch.from_numpy(render_images(world_seed, 0, capacity, resolution, kinds))
            self.pool = imgs.to(device)
            self.filled = capacity
            return
        capacity = max(chunk, (capacity // chunk) * chunk)
        self.pool = torch.empty((capacity, 3, resolution, resolution), dtype=torch.uint8, device=device)
        loader = torch.utils.data.DataLoader(
            RenderStream(world_seed, resolution, kinds, start_index, chunk),
            batch_size=None, num_workers=num_workers, prefetch_factor=4,
            pin_memory=(torch.device(device).type == "cuda"),
        )
        self._queue = queue.Queue(maxsize=4 * num_workers + 4)
        self._stop = threading.Event()
        self._iter = iter(loader)
        self._thread = threading.Thread(target=self._feed, name="gan-data-feeder", daemon=True)
        self._thread.start()

    def _feed(self):
        try:
            for item in self._iter:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except Exception as err:  # surfaced in refresh()
            self._error = err

    @property
    def next_index(self) -> int:
        """First world index not yet handed to training (where a resumed stream starts)."""
        return self.start_index + self.chunks_in * self.chunk

    @property
    def images_rendered(self) -> int:
        return self.filled if self.num_workers == 0 else self.chunks_in * self.chunk

    def refresh(self, max_chunks: int = 16, block_until: int = 0, should_stop=None) -> None:
        """Move ready chunks into the pool; with block_until, wait until that many images are in."""
        if self._thread is None:
            return
        moved = 0
        while True:
            if self._error is not None:
                raise RuntimeError(f"rendering training images failed: {self._error!r}") from self._error
            need = self.filled < block_until
            if not need and moved >= max_chunks:
                return
            try:
                item = self._queue.get(timeout=0.2) if need else self._queue.get_nowait()
            except queue.Empty:
                if not need:
                    return
                if should_stop is not None and should_stop():
                    return
                if not self._thread.is_alive():
                    raise RuntimeError("the image rendering workers stopped")
                continue
            n = item.shape[0]
            self.pool[self.pos:self.pos + n].copy_(item, non_blocking=True)
            self.pos = (self.pos + n) % self.pool.shape[0]
            self.filled = min(self.pool.shape[0], self.filled + n)
            self.chunks_in += 1
            moved += 1

    def batch(self, n: int) -> torch.Tensor:
        idx = torch.randint(self.filled, (n,), device=self.pool.device)
        return self.pool[idx].float().div_(127.5).sub_(1.0)

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        while True:  # unblock a feeder waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)
        it, self._iter = self._iter, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        del it
        self._thread = None
