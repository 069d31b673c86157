"""Forward error correction: a systematic Reed-Solomon erasure code over GF(2^8).

A block is k data symbols (byte strings, shorter ones zero-padded to the longest)
and m parity symbols; any k of the k + m rebuild the data. Parity row j is
sum_i C[j][i] * data_i with the Cauchy matrix C[j][i] = 1 / ((128 + j) xor i), so
every square submatrix is invertible and the code is MDS for k <= 128, m <= 127.

Written here rather than taken from zfec (the issue's first suggestion) because
zfec is GPL-licensed, encodes through a Python call per block, and multiplies
one byte at a time; its vectorised alternative, Intel ISA-L, is not on PyPI.
The split-nibble vector multiply in gf256.h is measured against zfec in
bench/fec.py (docs/performance.md). How datagrams become symbols is the
sender's and receiver's business (docs/protocol.md, "Forward error correction").
"""

import math

from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset


cdef extern from "gf256.h" nogil:
    void ddc_gf_init()
    uint8_t ddc_gf_mul(uint8_t a, uint8_t b)
    uint8_t ddc_gf_inverse(uint8_t a)
    void ddc_gf_mul_add(uint8_t* target, const uint8_t* source, size_t length, uint8_t factor)
    int ddc_gf_choose(const char* name)
    int ddc_gf_runs(int kind)
    int DDC_GF_KINDS
    const char* ddc_gf_kind_names[]
    void ddc_gf_mul_add_rows(uint8_t** targets, size_t offset, const uint8_t* factors, unsigned int rows,
                             const uint8_t* source, size_t length)
    void ddc_gf_dot_rows(uint8_t** targets, size_t offset, const uint8_t* factors, unsigned int rows,
                         const uint8_t* const* sources, unsigned int count, size_t length)
    const char* ddc_gf_name

ddc_gf_init()
ddc_gf_choose(NULL)


cdef uint8_t coefficient(uint32_t parity_row, uint32_t data_index) noexcept nogil:
    return ddc_gf_inverse(<uint8_t>((MAX_DATA_SYMBOLS + parity_row) ^ data_index))


cdef void multiply_add_rows(uint8_t** targets, size_t offset, const uint8_t* factors, uint32_t rows,
                            const uint8_t* source, size_t length) noexcept nogil:
    ddc_gf_mul_add_rows(targets, offset, factors, rows, source, length)


cdef void multiply_add_sources(uint8_t** targets, size_t offset, const uint8_t* factors, uint32_t rows,
                               const uint8_t* const* sources, uint32_t count, size_t length) noexcept nogil:
    ddc_gf_dot_rows(targets, offset, factors, rows, sources, count, length)


cdef bint invert(uint8_t* matrix, uint8_t* inverse, uint32_t n) noexcept nogil:
    """Gauss-Jordan on an n x n matrix (destroyed); False if singular, which a Cauchy submatrix never is."""
    cdef uint32_t row, column, pivot, other
    cdef uint8_t factor, swap
    memset(inverse, 0, n * n)
    for row in range(n):
        inverse[row * n + row] = 1
    for column in range(n):
        pivot = column
        while pivot < n and matrix[pivot * n + column] == 0:
            pivot += 1
        if pivot == n:
            return False
        if pivot != column:
            for other in range(n):
                swap = matrix[pivot * n + other]
                matrix[pivot * n + other] = matrix[column * n + other]
                matrix[column * n + other] = swap
                swap = inverse[pivot * n + other]
                inverse[pivot * n + other] = inverse[column * n + other]
                inverse[column * n + other] = swap
        factor = ddc_gf_inverse(matrix[column * n + column])
        for other in range(n):
            matrix[column * n + other] = ddc_gf_mul(matrix[column * n + other], factor)
            inverse[column * n + other] = ddc_gf_mul(inverse[column * n + other], factor)
        for row in range(n):
            if row != column and matrix[row * n + column]:
                factor = matrix[row * n + column]
                for other in range(n):
                    matrix[row * n + other] ^= ddc_gf_mul(matrix[column * n + other], factor)
                    inverse[row * n + other] ^= ddc_gf_mul(inverse[column * n + other], factor)
    return True


cdef bint recover(uint32_t data_count, const uint8_t** data, const size_t* data_lengths,
                  const uint8_t** parity, const uint32_t* parity_rows, uint32_t parity_count,
                  size_t symbol_length, uint8_t* out, uint32_t out_symbols) noexcept nogil:
    """Rebuilds the data symbols whose pointer is NULL into out, one symbol_length slot each, in index order.

    parity[r] is the symbol of parity row parity_rows[r]; present data symbols may be shorter than
    symbol_length (zero-padded). out has room for out_symbols symbols, which the caller counts from the
    same NULL pointers: False, with nothing written, when more are missing than that, or when fewer parity
    symbols than missing data symbols are given."""
    cdef uint32_t missing[MAX_DATA_SYMBOLS]
    cdef uint8_t* targets[MAX_DATA_SYMBOLS]
    cdef uint8_t factors[MAX_DATA_SYMBOLS]
    cdef uint32_t missing_count = 0, i, r, c
    cdef uint8_t* matrix
    cdef uint8_t* inverse
    cdef uint8_t* syndromes
    cdef bint solved
    if data_count > MAX_DATA_SYMBOLS:
        return False
    for i in range(data_count):
        if data[i] == NULL:
            missing[missing_count] = i
            missing_count += 1
    if missing_count == 0:
        return True
    if missing_count > parity_count or missing_count > out_symbols:
        return False
    syndromes = <uint8_t*>malloc(missing_count * symbol_length)
    matrix = <uint8_t*>malloc(2 * missing_count * missing_count)
    if syndromes == NULL or matrix == NULL:
        free(syndromes)
        free(matrix)
        return False
    inverse = matrix + missing_count * missing_count
    for r in range(missing_count):
        targets[r] = syndromes + r * symbol_length
        memcpy(targets[r], parity[r], symbol_length)
        for c in range(missing_count):
            matrix[r * missing_count + c] = coefficient(parity_rows[r], missing[c])
    for i in range(data_count):
        if data[i] != NULL:
            for r in range(missing_count):
                factors[r] = coefficient(parity_rows[r], i)
            ddc_gf_mul_add_rows(targets, 0, factors, missing_count, data[i],
                                data_lengths[i] if data_lengths[i] < symbol_length else symbol_length)
    solved = invert(matrix, inverse, missing_count)
    if solved:
        memset(out, 0, missing_count * symbol_length)
        for c in range(missing_count):
            for r in range(missing_count):
                ddc_gf_mul_add(out + c * symbol_length, syndromes + r * symbol_length, symbol_length,
                               inverse[c * missing_count + r])
    free(syndromes)
    free(matrix)
    return solved


# ---- Python-facing helpers (tests, benchmarks) ----

DATA_SYMBOLS_LIMIT = MAX_DATA_SYMBOLS
PARITY_SYMBOLS_LIMIT = MAX_PARITY_SYMBOLS


def implementation():
    """Which multiply is in use: one of available_multiplies()."""
    return ddc_gf_name.decode()


def available_multiplies():
    """The multiplies this CPU runs, best first: "gfni-avx512", "gfni", "avx2", "ssse3", "neon", "table"."""
    return [ddc_gf_kind_names[kind].decode() for kind in range(DDC_GF_KINDS) if ddc_gf_runs(kind)]


def choose_multiply(name=None):
    """Uses the multiply named, or with None the best this CPU runs (to compare them in tests)."""
    if name is None:
        ddc_gf_choose(NULL)
    elif not ddc_gf_choose(name.encode()):
        raise ValueError(f"multiply {name!r} is not one this CPU runs: {available_multiplies()}")


def encode(data, int parity_count):
    """The parity symbols of a block: each as long as the longest data symbol."""
    cdef uint32_t data_count = len(data), row, index
    cdef size_t length = max((len(symbol) for symbol in data), default=0)
    cdef const uint8_t[:] view
    cdef uint8_t[:] target
    if not 1 <= data_count <= MAX_DATA_SYMBOLS or not 1 <= parity_count <= MAX_PARITY_SYMBOLS:
        raise ValueError(f"a block has 1..{MAX_DATA_SYMBOLS} data and 1..{MAX_PARITY_SYMBOLS} parity symbols, "
                         f"not {data_count} and {parity_count}")
    cdef uint8_t* targets[MAX_PARITY_SYMBOLS]
    cdef uint8_t factors[MAX_PARITY_SYMBOLS]
    parities = [bytearray(length) for row in range(parity_count)]
    if length == 0:
        return [bytes(symbol) for symbol in parities]
    for row in range(<uint32_t>parity_count):
        target = parities[row]
        targets[row] = &target[0]
    for index in range(data_count):
        if len(data[index]):
            view = memoryview(data[index]).cast("B")
            for row in range(<uint32_t>parity_count):
                factors[row] = coefficient(row, index)
            with nogil:
                ddc_gf_mul_add_rows(targets, 0, factors, parity_count, &view[0], view.shape[0])
    return [bytes(symbol) for symbol in parities]


def decode(dict received, int data_count):
    """The data symbols of a block from any data_count of its symbols, given as {index: bytes}.

    Indices below data_count are data, from data_count on parity; returned data symbols are padded
    to the parity length. Raises ValueError when too few symbols were received."""
    cdef const uint8_t* data[MAX_DATA_SYMBOLS]
    cdef size_t lengths[MAX_DATA_SYMBOLS]
    cdef const uint8_t* parity[MAX_PARITY_SYMBOLS]
    cdef uint32_t rows[MAX_PARITY_SYMBOLS]
    cdef uint32_t parity_count = 0, index
    cdef size_t length
    cdef bytearray out
    cdef uint8_t[:] out_view
    if not 1 <= data_count <= MAX_DATA_SYMBOLS:
        raise ValueError(f"data_count {data_count} is outside 1..{MAX_DATA_SYMBOLS}")
    kept = {index: bytes(symbol) for index, symbol in received.items()}
    parity_lengths = {len(symbol) for index, symbol in kept.items() if index >= data_count}
    if len(parity_lengths) > 1:
        raise ValueError(f"parity symbols differ in length: {sorted(parity_lengths)}")
    length = parity_lengths.pop() if parity_lengths else max(map(len, kept.values()), default=0)
    for index in range(<uint32_t>data_count):
        symbol = kept.get(index)
        data[index] = NULL if symbol is None else <const uint8_t*><const char*>symbol
        lengths[index] = 0 if symbol is None else len(symbol)
    for index, symbol in sorted(kept.items()):
        if index >= data_count and parity_count < MAX_PARITY_SYMBOLS:
            parity[parity_count] = <const uint8_t*><const char*>symbol
            rows[parity_count] = index - data_count
            parity_count += 1
    missing = [index for index in range(data_count) if index not in kept]
    out = bytearray(max(len(missing), 1) * length)
    out_view = out
    if missing and not recover(data_count, data, lengths, parity, rows, parity_count, length, &out_view[0],
                               len(missing)):
        raise ValueError(f"{len(missing)} data symbols missing but only {parity_count} parity symbols received")
    rebuilt = {index: bytes(out[n * length:(n + 1) * length]) for n, index in enumerate(missing)}
    return [rebuilt[index] if index in rebuilt else kept[index].ljust(length, b"\0") for index in range(data_count)]


# ---- sizing: how much parity a block of a given size gets ----

BLOCK_FAILURE_TARGET = 1e-6


def block_failure_probability(int data_count, int parity_count, double loss):
    """The chance that a block of data_count + parity_count datagrams loses more than parity_count of them when
    each is lost independently with probability loss: any data_count of them rebuild it (the code is MDS)."""
    cdef int total = data_count + parity_count, lost
    cdef double kept = 1.0 - loss, failure = 0.0
    if loss <= 0.0:
        return 0.0
    if loss >= 1.0:
        return 1.0
    for lost in range(parity_count + 1, total + 1):
        failure += math.comb(total, lost) * loss ** lost * kept ** (total - lost)
    return min(failure, 1.0)


def rated_loss(int data, int parity):
    """The independent loss rate at which a full block of data + parity datagrams fails with probability
    BLOCK_FAILURE_TARGET: the loss the configured code is sized for."""
    cdef double low = 0.0, high = 1.0, middle
    for _ in range(64):
        middle = (low + high) / 2
        if block_failure_probability(data, parity, middle) > BLOCK_FAILURE_TARGET:
            high = middle
        else:
            low = middle
    return low


def parity_by_block_size(int data, int parity):
    """For each block size 0..data, the parity that makes a block of that size fail no more often than a full
    block does at the code's rated loss, and never less than the configured share (parity / data, rounded up).
    A full block gets exactly `parity`; a frame's one-datagram block gets several times its size, so that no
    block is the weak one (issue #21: a 4 + 1 block failed at 2 % loss where 64 + 16 blocks never did)."""
    if not 1 <= data <= MAX_DATA_SYMBOLS or not 1 <= parity <= MAX_PARITY_SYMBOLS:
        raise ValueError(f"an FEC block has 1..{MAX_DATA_SYMBOLS} data and 1..{MAX_PARITY_SYMBOLS} parity "
                         f"datagrams, not {data} and {parity}")
    loss = rated_loss(data, parity)
    target = block_failure_probability(data, parity, loss)
    sizes = [0]
    for size in range(1, data + 1):
        needed = -(-size * parity // data)
        while needed < parity and block_failure_probability(size, needed, loss) > target:
            needed += 1
        sizes.append(needed)
    return sizes
