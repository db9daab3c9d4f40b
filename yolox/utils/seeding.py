"""Seeds derived from several integers, scoped seeding of `random`/numpy, and RNG states a checkpoint can hold."""
import contextlib
import random

import numpy as np
import torch

__all__ = ["mix_seed", "seeded_python_and_numpy", "get_rng_states", "set_rng_states"]

_MASK64 = (1 << 64) - 1


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*values):
    """A 63-bit seed that depends on every integer in `values` and their order (splitmix64 chaining).

    Nearby inputs ((seed, 0), (seed, 1), ...) give unrelated seeds, unlike seed + k.
    """
    h = 0
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1


@contextlib.contextmanager
def seeded_python_and_numpy(seed, restore=True):
    """Seed `random` and numpy's global generator with `seed` for the block; with restore, put the previous states
    back afterwards (so that a main process's own random draws are not disturbed by a sample made in it)."""
    saved = (random.getstate(), np.random.get_state()) if restore else None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])


def get_rng_states():
    """The states of `random`, numpy, torch (CPU) and every CUDA device, as tensors and plain Python values only
    (loadable with torch.load(weights_only=True))."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    """Restore what get_rng_states returned (the CUDA part only where CUDA is in use)."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        cuda_states = states["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
