"""The two nearest descriptors of many pairs at once, in one fused Triton kernel (a GPU).

PyTorch's batched search (`hamming.two_nearest_many`) writes every distance of a pass
(a million per pair of 1,000-keypoint images) to the GPU's memory and reads them back
for `topk`: 17k pairs/s on an H200 (docs/performance.md §7), the largest GPU term of the
3M estimate. Here each block of a's rows takes b's rows a tile at a time: the tile's
products on the tensor cores (`tl.dot` of the 0/1 bits, exact: integers below 2,048),
its distances and their two smallest kept in registers, nothing written but the two.

Each distance is packed with its row of b as distance·65536 + row, so one minimum
orders by distance, then by row: the same nearest row as `hamming.two_nearest` on a
tie, the same two distances. Runs on the CPU under TRITON_INTERPRET=1 (the tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Rows of b a key can name (the low 16 bits); ORB keeps 1,000 per image by default.
MAX_ROWS = 1 << 16
_ROW_BITS = 16
_NO_KEY = 2**31 - 1


@triton.jit
def _two_nearest_kernel(bits_ptr, counts_ptr, lengths_ptr, set_a_ptr, set_b_ptr, out_ptr, rows,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BITS: tl.constexpr):
    pair = tl.program_id(0)
    block = tl.program_id(1)
    set_a = tl.load(set_a_ptr + pair).to(tl.int64)
    set_b = tl.load(set_b_ptr + pair).to(tl.int64)
    rows_a = tl.load(lengths_ptr + set_a)
    rows_b = tl.load(lengths_ptr + set_b)
    bit = tl.arange(0, BITS)

    row_a = block * BLOCK_M + tl.arange(0, BLOCK_M)
    in_a = row_a < rows_a
    a = tl.load(bits_ptr + (set_a * rows + row_a)[:, None] * BITS + bit[None, :], mask=in_a[:, None], other=0.0)
    count_a = tl.load(counts_ptr + set_a * rows + row_a, mask=in_a, other=0)

    best = tl.full([BLOCK_M], _NO_KEY, tl.int32)
    runner_up = tl.full([BLOCK_M], _NO_KEY, tl.int32)
    # A block past a's last row searches nothing.
    end = tl.where(block * BLOCK_M < rows_a, rows_b, 0)
    for start in range(0, end, BLOCK_N):
        row_b = start + tl.arange(0, BLOCK_N)
        in_b = row_b < rows_b
        b = tl.load(bits_ptr + (set_b * rows + row_b)[:, None] * BITS + bit[None, :], mask=in_b[:, None], other=0.0)
        count_b = tl.load(counts_ptr + set_b * rows + row_b, mask=in_b, other=0)
        shared = tl.dot(a, tl.trans(b)).to(tl.int32)  # bits set in both
        distance = count_a[:, None] + count_b[None, :] - 2 * shared
        key = tl.where(in_b[None, :], (distance << _ROW_BITS) + row_b[None, :], _NO_KEY)
        tile_best = tl.min(key, axis=1)
        tile_runner_up = tl.min(tl.where(key == tile_best[:, None], _NO_KEY, key), axis=1)
        # The two smallest of four, each pair already ordered (keys are distinct).
        runner_up = tl.minimum(tl.maximum(best, tile_best), tl.minimum(runner_up, tile_runner_up))
        best = tl.minimum(best, tile_best)

    out = out_ptr + (pair * rows + row_a) * 2
    tl.store(out, best, mask=in_a)
    tl.store(out + 1, runner_up, mask=in_a)


def two_nearest_pass(bits: torch.Tensor, counts: torch.Tensor, lengths: torch.Tensor, set_a: torch.Tensor,
                     set_b: torch.Tensor, block_m: int = 64, block_n: int = 64,
                     num_warps: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """bits (sets, rows, 256): each set's descriptors unpacked to float16 0/1 (float32 on
    a CPU), zero past its length; counts (sets, rows): their bits set; lengths (sets,);
    set_a, set_b (pairs,): each pair's two sets. → nearest row of b, first and second
    distance, each (pairs, rows) int32 (rows past a's length undefined)."""
    sets, rows, width = bits.shape
    if rows > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS} descriptors per image, got {rows}")
    out = torch.empty((len(set_a), rows, 2), dtype=torch.int32, device=bits.device)
    grid = (len(set_a), triton.cdiv(rows, block_m))
    _two_nearest_kernel[grid](bits.contiguous(), counts.to(torch.int32).contiguous(),
                              lengths.to(torch.int32).contiguous(), set_a.to(torch.int32).contiguous(),
                              set_b.to(torch.int32).contiguous(), out, rows,
                              BLOCK_M=block_m, BLOCK_N=block_n, BITS=width, num_warps=num_warps)
    best, runner_up = out[..., 0], out[..., 1]
    return best & (MAX_ROWS - 1), best >> _ROW_BITS, runner_up >> _ROW_BITS
