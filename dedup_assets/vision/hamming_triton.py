"""The two nearest descriptors of many pairs at once, in one fused Triton kernel (a GPU).

PyTorch's batched search (`hamming.two_nearest_many`) writes every distance of a pass
(a million per pair of 1,000-keypoint images) to the GPU's memory and reads them back
for `topk`: 17k pairs/s on an H200 (docs/performance.md §7), the largest GPU term of the
3M estimate. Here each block of a's rows takes b's rows a tile at a time: the packed
bytes unpacked in registers, the tile's products on the tensor cores (`tl.dot` of the
0/1 bits, exact: integers below 2,048), its distances and their two smallest kept in
registers; nothing written but the two. The host sends each pass's descriptor sets
packed, one after another (no padding).

Each distance is packed with its row of b as distance·65536 + row, so one minimum
orders by distance, then by row: the same nearest row as `hamming.two_nearest` on a
tie, the same two distances. Runs on the CPU under TRITON_INTERPRET=1 (the tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Rows of b a key can name (its low 16 bits); ORB keeps 1,000 per image by default.
ROW_BITS = 16
MAX_ROWS = 1 << ROW_BITS
# Kernels read globals only as constexpr.
_ROW_BITS = tl.constexpr(ROW_BITS)
_NO_KEY = tl.constexpr(2**31 - 1)


@triton.jit
def _bits(descriptors_ptr, first, row, present, BYTES: tl.constexpr):
    """Rows first + row of the packed descriptors as float16 0/1 values, (rows, 8·BYTES);
    rows not present as zeros. Unpacked here, in registers: none of it written back."""
    byte = tl.arange(0, BYTES)
    shift = tl.arange(0, 8).to(tl.uint8)
    packed = tl.load(descriptors_ptr + (first + row)[:, None] * BYTES + byte[None, :], mask=present[:, None], other=0)
    bits = (packed[:, :, None] >> shift[None, None, :]) & 1
    return tl.reshape(bits, (row.shape[0], BYTES * 8)).to(tl.float16)


@triton.jit
def _two_nearest_kernel(descriptors_ptr, starts_ptr, lengths_ptr, set_a_ptr, set_b_ptr, out_ptr, rows,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BYTES: tl.constexpr):
    pair = tl.program_id(0)
    block = tl.program_id(1)
    set_a = tl.load(set_a_ptr + pair)
    set_b = tl.load(set_b_ptr + pair)
    first_a = tl.load(starts_ptr + set_a)
    first_b = tl.load(starts_ptr + set_b)
    rows_a = tl.load(lengths_ptr + set_a).to(tl.int32)
    rows_b = tl.load(lengths_ptr + set_b).to(tl.int32)

    row_a = block * BLOCK_M + tl.arange(0, BLOCK_M)
    in_a = row_a < rows_a
    a = _bits(descriptors_ptr, first_a, row_a, in_a, BYTES)
    count_a = tl.sum(a.to(tl.int32), axis=1)

    best = tl.full([BLOCK_M], _NO_KEY, tl.int32)
    runner_up = tl.full([BLOCK_M], _NO_KEY, tl.int32)
    # A block past a's last row searches nothing.
    end = tl.where(block * BLOCK_M < rows_a, rows_b, 0)
    for start in range(0, end, BLOCK_N):
        row_b = start + tl.arange(0, BLOCK_N)
        in_b = row_b < rows_b
        b = _bits(descriptors_ptr, first_b, row_b, in_b, BYTES)
        count_b = tl.sum(b.to(tl.int32), axis=1)
        shared = tl.dot(a, tl.trans(b)).to(tl.int32)  # bits set in both
        distance = count_a[:, None] + count_b[None, :] - 2 * shared
        key = tl.where(in_b[None, :], (distance << _ROW_BITS) + row_b[None, :], _NO_KEY)
        tile_best = tl.min(key, axis=1)
        tile_runner_up = tl.min(tl.where(key == tile_best[:, None], _NO_KEY, key), axis=1)
        # The two smallest of four, each pair already ordered (keys are distinct).
        runner_up = tl.minimum(tl.maximum(best, tile_best), tl.minimum(runner_up, tile_runner_up))
        best = tl.minimum(best, tile_best)

    out = out_ptr + (pair.to(tl.int64) * rows + row_a) * 2
    tl.store(out, best, mask=in_a)
    tl.store(out + 1, runner_up, mask=in_a)


def two_nearest_pass(descriptors: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor,
                     set_a: torch.Tensor, set_b: torch.Tensor, block_m: int = 64, block_n: int = 64,
                     num_warps: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """descriptors (all rows, 32) uint8: the pass's descriptor sets one after another, set
    k from row starts[k], lengths[k] rows; set_a, set_b (pairs,): each pair's two sets.
    → nearest row of b, first and second distance, each (pairs, the longest a) int32
    (rows past a pair's a undefined)."""
    rows = int(lengths[set_a].max())
    if int(lengths.max()) > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS} descriptors per image, got {int(lengths.max())}")
    out = torch.empty((len(set_a), rows, 2), dtype=torch.int32, device=descriptors.device)
    grid = (len(set_a), triton.cdiv(rows, block_m))
    as_int64 = [t.to(torch.int64).contiguous() for t in (starts, lengths, set_a, set_b)]
    _two_nearest_kernel[grid](descriptors.contiguous(), *as_int64, out, rows,
                              BLOCK_M=block_m, BLOCK_N=block_n, BYTES=descriptors.shape[1], num_warps=num_warps)
    best, runner_up = out[..., 0], out[..., 1]
    return best & (MAX_ROWS - 1), best >> ROW_BITS, runner_up >> ROW_BITS
