"""Check a given answer: valid permutation of the right shape, model output vs the data."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from . import certify
from .errors import InputError
from .io import Data, Pieces
from .roles import Stack, assign_roles


def answer_text(permutation: list[int]) -> str:
    """The answer as the puzzle's checker hashes it: indices joined by commas, no spaces."""
    return ",".join(str(int(i)) for i in permutation)


def answer_sha256(permutation: list[int]) -> str:
    """SHA-256 hex digest of :func:`answer_text` (ASCII)."""
    return hashlib.sha256(answer_text(permutation).encode("ascii")).hexdigest()


def parse_permutation(text: str) -> list[int]:
    """Read '43,34,...' (commas and/or whitespace, optional brackets) or a JSON list, or a
    JSON object with a 'permutation' list."""
    import json

    text = text.strip()
    if text.startswith("{"):
        try:
            text = json.dumps(json.loads(text)["permutation"])
        except (ValueError, KeyError, TypeError):
            raise InputError("the JSON answer has no 'permutation' list") from None
    cells = [c for c in text.strip("[] \n").replace(",", " ").split() if c]
    try:
        return [int(c) for c in cells]
    except ValueError:
        raise InputError("the answer must be a list of integers") from None


def sequences(stack: Stack, permutation: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """seq_in, seq_out (n,) stack indices of an answer; refuses anything malformed."""
    n, total = stack.blocks, 2 * stack.blocks + 1
    if len(permutation) != total:
        raise InputError(f"the answer has {len(permutation)} entries; {total} are needed "
                         f"(2 per block for {n} blocks, then the final layer)")
    if sorted(permutation) != list(range(total)):
        raise InputError(f"the answer is not a permutation of 0..{total - 1}")
    where_in = {int(p): i for i, p in enumerate(stack.in_ids)}
    where_out = {int(p): j for j, p in enumerate(stack.out_ids)}
    bad = [k for k in range(n) if permutation[2 * k] not in where_in
           or permutation[2 * k + 1] not in where_out]
    if bad or permutation[-1] != stack.last_id:
        k = bad[0] if bad else n
        raise InputError(f"entry {2 * k} of the answer does not fit: even entries must be "
                         "block input layers, odd ones output layers, the last the final layer")
    return (np.array([where_in[p] for p in permutation[0:-1:2]]),
            np.array([where_out[p] for p in permutation[1:-1:2]]))


@dataclass
class Verification:
    """An answer checked against the data: MSE vs pred and true (float64, all rows)."""

    permutation: list[int]
    sha256: str
    mse: float
    mse_true: float | None
    certified: bool
    certifiable: bool
    tolerance: float

    def to_json(self) -> dict:
        return asdict(self)


def verify(pieces: Pieces, data: Data, permutation: list[int], kernels: str = "cpu") -> Verification:
    """Run the network the answer describes on all rows and compare with the data."""
    stack = assign_roles(pieces)
    if data.x.shape[1] != stack.width:
        raise InputError(f"the data has {data.x.shape[1]} input columns but the pieces have "
                         f"width {stack.width}")
    seq_in, seq_out = sequences(stack, permutation)
    out = certify.model_output(stack.weights, data.x, seq_in, seq_out, kernels)
    tol = certify.tolerance(data.target, stack.blocks)
    mse = certify.mse(out, data.target)
    return Verification(list(map(int, permutation)), answer_sha256(permutation), mse,
                        certify.mse(out, data.true) if data.true is not None else None,
                        bool(data.certifiable and mse <= tol), data.certifiable, tol)
