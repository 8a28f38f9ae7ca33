"""The byte-plane codec (FORMAT.md §3.10, codec id 5): decoding.

A compressed chunk is a sequence of segments (raw, repeat, canonical Huffman
with four interleaved bit streams). Huffman decoding is sequential within a
stream, so this decoder runs every stream of a batch of chunks in lockstep
with numpy: each step looks up 14 bits per stream in a table that gives up to
four symbols at once. A step costs the same dozen numpy calls whether it
advances 16 streams or 1,600, so ``decode_chunks`` is fed many chunks at once
(``ContainerFile.read_bytes`` passes all compressed chunks of a blob, in
batches).

Every rejection of FORMAT.md §3.10 ("Limits and rejection") is checked; errors
are ``PlaneError`` with the chunk's position in the batch.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

KIND_RAW, KIND_REPEAT, KIND_HUFFMAN = 0, 1, 2
MAX_REPEAT = 1 << 20
MAX_LENGTH = 11
SEGMENT_HEADER = 5
# Bits looked at per step, and the most symbols one step decodes from them.
_PEEK = 14
_PER_STEP = 4
_MASK = (1 << _PEEK) - 1
# Steps between two checks that no stream has run past its end, and the zero bytes after each
# stream that keep such a run inside it: _CHECK_EVERY × _PEEK bits plus a 24-bit window.
_CHECK_EVERY = 16
# Distinct codes in one lockstep batch (144 KiB of step table each, 36 MiB in all): the lanes
# decoded so far run when one more would be needed, which bounds the tables' memory when every
# small segment brings its own code.
_MAX_TABLES = 256
_PAD = (_CHECK_EVERY * _PEEK + 24) // 8 + 1
_AR = np.arange(_PER_STEP, dtype=np.int64)


class PlaneError(ValueError):
    """A malformed plane-codec chunk: ``chunk`` is its position in the batch."""

    def __init__(self, chunk: int, reason: str) -> None:
        super().__init__(reason)
        self.chunk = chunk
        self.reason = reason


class _Table:
    """The step table of one Huffman code: for every 14-bit peek, how many whole codes
    it holds (1…4), their symbols, and the bits used after each."""

    __slots__ = ("count", "symbols", "bits")

    def __init__(self, lengths: np.ndarray) -> None:
        # The 11-bit table of (symbol, length), indexed by the next 11 bits with the first
        # unread bit as bit 0: every index whose low `length` bits are the reversed code.
        reversed_codes = _reversed_codes(lengths)
        sym11 = np.zeros(1 << MAX_LENGTH, dtype=np.uint8)
        len11 = np.zeros(1 << MAX_LENGTH, dtype=np.int64)
        for symbol in np.flatnonzero(lengths):
            length = int(lengths[symbol])
            sym11[int(reversed_codes[symbol])::1 << length] = symbol
            len11[int(reversed_codes[symbol])::1 << length] = length
        peek = np.arange(1 << _PEEK, dtype=np.int64)
        used = np.zeros(1 << _PEEK, dtype=np.int64)
        fits = np.ones(1 << _PEEK, dtype=bool)
        # Kept narrow (144 KiB a table): a batch holds up to _MAX_TABLES of them.
        self.count = np.zeros(1 << _PEEK, dtype=np.uint8)
        self.symbols = np.zeros((1 << _PEEK, _PER_STEP), dtype=np.uint8)
        self.bits = np.zeros((1 << _PEEK, _PER_STEP), dtype=np.uint8)
        for j in range(_PER_STEP):
            index = (peek >> used) & ((1 << MAX_LENGTH) - 1)
            length = len11[index]
            # A code counts when all of its bits lie inside the peek (the first always does).
            fits &= used + length <= _PEEK
            self.symbols[:, j] = sym11[index]
            used = np.where(fits, used + length, used)
            self.count += fits
            self.bits[:, j] = used


def _parse_lengths(stored: memoryview, at: int, end: int) -> Tuple[np.ndarray, int]:
    """The code lengths of a Huffman body at ``at``; returns them (256 entries) and the table's size."""
    if end - at < 2:
        raise ValueError("truncated")
    first, last = stored[at], stored[at + 1]
    if first > last:
        raise ValueError(f"Huffman symbols {first}…{last}: first > last")
    span = last - first + 1
    table_bytes = 2 + (span + 1) // 2
    if end - at < table_bytes + 16:
        raise ValueError("truncated")
    nibbles = np.frombuffer(stored[at + 2:at + table_bytes], dtype=np.uint8)
    pairs = np.empty(nibbles.size * 2, dtype=np.uint8)
    pairs[0::2] = nibbles & 15
    pairs[1::2] = nibbles >> 4
    if span & 1 and pairs[span] != 0:
        raise ValueError("the unused last code-length nibble is not 0")
    lengths = np.zeros(256, dtype=np.int64)
    lengths[first:last + 1] = pairs[:span]
    if lengths.max() > MAX_LENGTH:
        raise ValueError(f"a Huffman code length exceeds {MAX_LENGTH}")
    if lengths[first] == 0 or lengths[last] == 0:
        raise ValueError("the first or last Huffman symbol has no code")
    used = lengths[lengths > 0]
    if int(np.sum(1 << (MAX_LENGTH - used))) != 1 << MAX_LENGTH:
        raise ValueError("Huffman code lengths are not a complete prefix code")
    return lengths, table_bytes


def decode_chunks(chunks: Sequence[Tuple[memoryview, int]]) -> List[np.ndarray]:
    """The filtered bytes of each ``(stored, raw_length)`` plane-codec chunk, as uint8 arrays."""
    outputs = [np.empty(raw_length, dtype=np.uint8) for _, raw_length in chunks]
    tables: Dict[bytes, int] = {}
    table_list: List[_Table] = []
    # One lane per Huffman bit stream: (chunk, stream bytes, table, output start, symbol count).
    lanes: List[Tuple[int, memoryview, int, int, int]] = []
    for position, (stored, raw_length) in enumerate(chunks):
        out = outputs[position]
        end = len(stored)
        at = 0
        written = 0
        while at < end:
            if end - at < SEGMENT_HEADER:
                raise PlaneError(position, "plane codec: a segment header runs past the chunk's stored bytes")
            kind = stored[at]
            length = int.from_bytes(stored[at + 1:at + 5], "little")
            at += SEGMENT_HEADER
            if length == 0:
                raise PlaneError(position, "plane codec: a segment of length 0")
            if length > raw_length - written:
                raise PlaneError(position, f"plane codec: segments decode to more than the chunk's {raw_length} bytes")
            if kind == KIND_RAW:
                if end - at < length:
                    raise PlaneError(position, "plane codec: a raw segment runs past the chunk's stored bytes")
                out[written:written + length] = np.frombuffer(stored[at:at + length], dtype=np.uint8)
                at += length
            elif kind == KIND_REPEAT:
                if length > MAX_REPEAT:
                    raise PlaneError(position, f"plane codec: a repeat segment of {length} bytes (at most {MAX_REPEAT})")
                if end - at < 1:
                    raise PlaneError(position, "plane codec: a repeat segment runs past the chunk's stored bytes")
                out[written:written + length] = stored[at]
                at += 1
            elif kind == KIND_HUFFMAN:
                try:
                    lengths, table_bytes = _parse_lengths(stored, at, end)
                except ValueError as error:
                    reason = str(error)
                    if reason == "truncated":
                        reason = "a Huffman segment runs past the chunk's stored bytes"
                    raise PlaneError(position, f"plane codec: {reason}") from None
                key = lengths.astype(np.uint8).tobytes()
                table = tables.get(key)
                if table is None:
                    if len(table_list) == _MAX_TABLES:
                        _decode_lanes(lanes, table_list, outputs)
                        lanes, tables, table_list = [], {}, []
                    table = tables[key] = len(table_list)
                    table_list.append(_Table(lengths))
                sizes = [int.from_bytes(stored[at + table_bytes + 4 * k:at + table_bytes + 4 * k + 4], "little")
                         for k in range(4)]
                at += table_bytes + 16
                quarter = (length + 3) // 4
                for k in range(4):
                    if sizes[k] > end - at:
                        raise PlaneError(position, "plane codec: a Huffman stream runs past the chunk's stored bytes")
                    begin = min(length, k * quarter)
                    count = min(length, (k + 1) * quarter) - begin
                    lanes.append((position, stored[at:at + sizes[k]], table, written + begin, count))
                    at += sizes[k]
            else:
                raise PlaneError(position, f"plane codec: unknown segment kind {kind}")
            written += length
        if written != raw_length:
            raise PlaneError(position, f"plane codec: segments decode to {written} bytes, the chunk has {raw_length}")
    if lanes:
        _decode_lanes(lanes, table_list, outputs)
    return outputs


def _where(keep: np.ndarray, *arrays: np.ndarray) -> Tuple[np.ndarray, ...]:
    """The lanes' state arrays without the lanes ``keep`` is False for."""
    return tuple(array[keep] for array in arrays)


def _decode_lanes(lanes: List[Tuple[int, memoryview, int, int, int]], tables: List[_Table],
                  outputs: List[np.ndarray]) -> None:
    """Decodes every lane's stream in lockstep and checks that each ends exactly at its last code."""
    n = len(lanes)
    sizes = np.array([len(lane[1]) for lane in lanes], dtype=np.int64)
    counts = np.array([lane[4] for lane in lanes], dtype=np.int64)
    # The streams back to back, each followed by _PAD zero bytes (missing bits read as 0; a lane
    # that runs past its end between two checks stays inside its padding), seen as 24-bit
    # little-endian windows starting at every byte. Bit positions are absolute in `joined`.
    padded = sizes + _PAD
    starts = np.concatenate(([0], np.cumsum(padded)[:-1]))
    joined = np.zeros(int(padded.sum()) + 3, dtype=np.uint8)
    for lane, start in zip(lanes, starts.tolist()):
        joined[start:start + len(lane[1])] = np.frombuffer(lane[1], dtype=np.uint8)
    windows = (joined[:-2].astype(np.uint32) | (joined[1:-1].astype(np.uint32) << 8)
               | (joined[2:].astype(np.uint32) << 16))
    # Narrow types: the gathers from these tables are most of a step's memory traffic.
    count_table = np.concatenate([t.count for t in tables])
    symbol_table = np.concatenate([t.symbols for t in tables])
    bits_table = np.concatenate([t.bits for t in tables])
    all_bits = bits_table[:, _PER_STEP - 1].copy()  # the bits of every code a step holds
    bits_table = bits_table.reshape(-1)
    # Each lane decodes into its own slot with _PER_STEP - 1 bytes of slack (a step writes
    # four symbols whatever it keeps), then the slots are copied to the chunks.
    slot_starts = np.concatenate(([0], np.cumsum(counts + _PER_STEP - 1)[:-1]))
    scratch = np.zeros(int((counts + _PER_STEP - 1).sum()), dtype=np.uint8)
    limits = (starts + sizes) * 8
    final_bits = np.zeros(n, dtype=np.int64)

    def overrun(ids: np.ndarray, position: np.ndarray) -> None:
        late = position > limits[ids]
        if late.any():
            raise PlaneError(lanes[int(ids[late][0])][0], "plane codec: a Huffman stream ends inside a code")

    ids = np.flatnonzero(counts > 0)
    position = starts[ids] * 8
    table_base = np.array([lane[2] for lane in lanes], dtype=np.int64)[ids] << _PEEK
    output = slot_starts[ids].copy()
    remaining = counts[ids].copy()
    # Fast steps while every lane has at least _PER_STEP symbols to go (each step keeps all the
    # codes its peek holds); lanes with fewer move to the careful steps below.
    tail: List[Tuple[np.ndarray, ...]] = []
    step = 0
    while ids.size:
        short = remaining < _PER_STEP
        if short.any():
            tail.append((ids[short], position[short], table_base[short], output[short], remaining[short]))
            ids, position, table_base, output, remaining = _where(~short, ids, position, table_base, output, remaining)
            if not ids.size:
                break
        entry = table_base + ((windows[position >> 3] >> (position & 7).astype(np.uint32)) & _MASK)
        scratch[output[:, None] + _AR] = symbol_table[entry]
        take = count_table[entry]
        position += all_bits[entry]
        output += take
        remaining -= take
        step += 1
        if step % _CHECK_EVERY == 0:
            overrun(ids, position)
    if tail:
        ids, position, table_base, output, remaining = (np.concatenate(parts) for parts in zip(*tail))
        overrun(ids, position)
        done = remaining == 0
        final_bits[ids[done]] = position[done]
        ids, position, table_base, output, remaining = _where(~done, ids, position, table_base, output, remaining)
        # At most _PER_STEP - 1 steps: each keeps at least one code.
        while ids.size:
            entry = table_base + ((windows[position >> 3] >> (position & 7).astype(np.uint32)) & _MASK)
            take = np.minimum(count_table[entry], remaining)
            scratch[output[:, None] + _AR] = symbol_table[entry]
            position += bits_table[entry * _PER_STEP + take - 1]
            output += take
            remaining -= take
            done = remaining == 0
            final_bits[ids[done]] = position[done]
            ids, position, table_base, output, remaining = _where(~done, ids, position, table_base, output,
                                                                  remaining)
    # A stream ends inside its last code when more bits were used than it has, and has
    # bytes left over when 8 or more bits remain.
    used = final_bits - starts * 8
    left = np.where(counts > 0, sizes * 8 - used, sizes * 8)
    bad = np.flatnonzero((left < 0) | (left >= 8))
    if bad.size:
        lane = lanes[int(bad[0])]
        what = "ends inside a code" if left[bad[0]] < 0 else f"has {int(left[bad[0]]) // 8} bytes after its last code"
        raise PlaneError(lane[0], f"plane codec: a Huffman stream {what}")
    for lane, slot in zip(lanes, slot_starts.tolist()):
        if lane[4]:
            outputs[lane[0]][lane[3]:lane[3] + lane[4]] = scratch[slot:slot + lane[4]]


# ---------------------------------------------------------------------------- encoding
#
# The writer's choices are not part of the format (a reader depends on none of them);
# these are the Swift engine's (Sources/CCheckpointKernels/planes.c, huffman.c), so that a
# file written here is byte for byte the one `ckpt convert --codec planes` writes.

_MIN_SAVING_SHIFT = 5        # code a region or piece only when it saves ≥ 1/32
_SAMPLE_THRESHOLD = 64 << 10  # regions from this size are sampled first
_SAMPLE_BLOCK = 256           # … in 256-byte blocks every 4 KiB (1/16)
_SAMPLE_STRIDE = 4096
_PIECE_SIZE = 256 << 10       # each Huffman segment covers at most one 256 KiB piece


def huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Code lengths (≤ 11) for the byte counts ``counts`` (256 entries): Huffman's, from a
    two-queue construction over the symbols in ascending (count, symbol) order, then limited
    to 11 bits and made complete. All zeros when fewer than two symbols occur."""
    lengths = np.zeros(256, dtype=np.int64)
    counts_list = [int(c) for c in counts]
    symbols = sorted((s for s in range(256) if counts_list[s]), key=lambda s: (counts_list[s], s))
    n = len(symbols)
    if n < 2:
        return lengths
    weight = [counts_list[s] for s in symbols] + [0] * (n - 1)
    parent = [0] * (2 * n - 1)
    leaf, inner = 0, n
    for node in range(n, 2 * n - 1):
        pick = []
        for _ in range(2):
            if leaf < n and (inner >= node or weight[leaf] <= weight[inner]):
                pick.append(leaf)
                leaf += 1
            else:
                pick.append(inner)
                inner += 1
        weight[node] = weight[pick[0]] + weight[pick[1]]
        parent[pick[0]] = parent[pick[1]] = node
    depth = [0] * (2 * n - 1)
    for node in range(2 * n - 3, -1, -1):
        depth[node] = depth[parent[node]] + 1
    length = [min(depth[i], MAX_LENGTH) for i in range(n)]
    full = 1 << MAX_LENGTH
    kraft = sum(1 << (MAX_LENGTH - l) for l in length)
    while kraft > full:
        # Lengthen the least frequent symbol among the longest ones still below the limit.
        best = -1
        for i in range(n):
            if length[i] < MAX_LENGTH and (best < 0 or length[i] > length[best]):
                best = i
        kraft -= 1 << (MAX_LENGTH - length[best] - 1)
        length[best] += 1
    while kraft < full:
        # Shorten the most frequent symbol whose shortening still fits.
        best = -1
        for i in range(n - 1, -1, -1):
            if length[i] > 1 and (1 << (MAX_LENGTH - length[i])) <= full - kraft:
                best = i
                break
        if best < 0:
            break
        kraft += 1 << (MAX_LENGTH - length[best])
        length[best] -= 1
    for i, s in enumerate(symbols):
        lengths[s] = length[i]
    return lengths


def _reversed_codes(lengths: np.ndarray) -> np.ndarray:
    """Each symbol's canonical code (RFC 1951 §3.2.2) with its bits reversed: the value whose
    bits, written from the least significant, put the code's most significant bit first."""
    counts = np.bincount(lengths, minlength=MAX_LENGTH + 1)
    counts[0] = 0
    next_code = [0] * (MAX_LENGTH + 1)
    code = 0
    for bits in range(1, MAX_LENGTH + 1):
        code = (code + int(counts[bits - 1])) << 1
        next_code[bits] = code
    reversed_codes = np.zeros(256, dtype=np.int64)
    for symbol in np.flatnonzero(lengths):
        length = int(lengths[symbol])
        reversed_codes[symbol] = int(format(next_code[length], f"0{length}b")[::-1], 2)
        next_code[length] += 1
    return reversed_codes


def _bit_stream(values: np.ndarray, lengths: np.ndarray, reversed_codes: np.ndarray) -> bytes:
    """The codes of ``values`` back to back, least significant bit first, zero-padded to a byte."""
    if not values.size:
        return b""
    widths = lengths[values]
    ends = np.cumsum(widths)
    starts = ends - widths
    size = (int(ends[-1]) + 7) // 8
    shifted = reversed_codes[values] << (starts & 7)  # at most 11 + 7 bits: three bytes
    byte = starts >> 3
    total = np.zeros(size + 3, dtype=np.int64)
    for k in range(3):
        # The codes' bits are disjoint, so the sum of each byte's parts is their OR.
        total += np.bincount(byte + k, weights=(shifted >> (8 * k)) & 255, minlength=size + 3).astype(np.int64)
    return total[:size].astype(np.uint8).tobytes()


def _coded_bits(counts: np.ndarray) -> Tuple[int, np.ndarray]:
    lengths = huffman_lengths(counts)
    return int(np.dot(counts.astype(np.int64), lengths)), lengths


def _segment(kind: int, length: int, body: bytes) -> bytes:
    return bytes([kind]) + length.to_bytes(4, "little") + body


def _encode_piece(piece: np.ndarray) -> bytes:
    n = piece.size
    counts = np.bincount(piece, minlength=256)
    used = np.flatnonzero(counts)
    if used.size == 1:
        return b"".join(_segment(KIND_REPEAT, min(MAX_REPEAT, n - at), bytes([int(used[0])]))
                        for at in range(0, n, MAX_REPEAT))
    bits, lengths = _coded_bits(counts)
    coded = np.flatnonzero(lengths)
    first, last = int(coded[0]), int(coded[-1])
    total = SEGMENT_HEADER + 2 + (last - first + 2) // 2 + 16 + (bits + 7) // 8 + 4
    if total > n - (n >> _MIN_SAVING_SHIFT):
        return _segment(KIND_RAW, n, piece.tobytes())
    reversed_codes = _reversed_codes(lengths)
    quarter = (n + 3) // 4
    streams = [_bit_stream(piece[min(n, k * quarter):min(n, (k + 1) * quarter)].astype(np.int64), lengths,
                           reversed_codes) for k in range(4)]
    span = lengths[first:last + 1].astype(np.uint8)
    if span.size & 1:
        span = np.append(span, np.uint8(0))
    nibbles = (span[0::2] | (span[1::2] << 4)).astype(np.uint8).tobytes()
    body = (bytes([first, last]) + nibbles + b"".join(len(s).to_bytes(4, "little") for s in streams)
            + b"".join(streams))
    return _segment(KIND_HUFFMAN, n, body)


def _encode_region(region: np.ndarray) -> bytes:
    n = region.size
    if n == 0:
        return b""
    if n >= _SAMPLE_THRESHOLD:
        # A cheap look first: 256-byte blocks every 4 KiB. A region that would not pay is one raw segment.
        starts = np.arange(0, n - _SAMPLE_BLOCK + 1, _SAMPLE_STRIDE)
        sample = region[(starts[:, None] + np.arange(_SAMPLE_BLOCK)).reshape(-1)]
        bits, _ = _coded_bits(np.bincount(sample, minlength=256))
        if bits > 0 and bits > 8 * (sample.size - (sample.size >> _MIN_SAVING_SHIFT)):
            return _segment(KIND_RAW, n, region.tobytes())
    pieces = (n + _PIECE_SIZE - 1) // _PIECE_SIZE
    out = []
    for i in range(pieces):
        # Equal pieces (the first ones one byte longer), so no piece is a small remainder.
        first = n // pieces * i + min(i, n % pieces)
        length = n // pieces + (1 if i < n % pieces else 0)
        out.append(_encode_piece(region[first:first + length]))
    return b"".join(out)


def encode_chunk(filtered: np.ndarray, element_size: int) -> bytes:
    """The segments of one chunk's filtered bytes (FORMAT.md §3.10): its planes (``element_size``
    of them, 0 or 1 for no filter) and the trailing bytes, each region coded as the Swift writer
    does. The caller stores the chunk raw when this is not smaller."""
    a = np.frombuffer(filtered, dtype=np.uint8)
    if element_size > 1:
        count = a.size // element_size
        regions = [a[k * count:(k + 1) * count] for k in range(element_size)] + [a[count * element_size:]]
    else:
        regions = [a]
    return b"".join(_encode_region(region) for region in regions)
