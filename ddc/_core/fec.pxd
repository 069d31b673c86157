from libc.stdint cimport uint8_t, uint32_t

cdef enum:
    MAX_DATA_SYMBOLS = 128
    MAX_PARITY_SYMBOLS = 127

cdef uint8_t coefficient(uint32_t parity_row, uint32_t data_index) noexcept nogil
cdef void multiply_add_rows(uint8_t** targets, size_t offset, const uint8_t* factors, uint32_t rows,
                            const uint8_t* source, size_t length) noexcept nogil
cdef void multiply_add_sources(uint8_t** targets, size_t offset, const uint8_t* factors, uint32_t rows,
                               const uint8_t* const* sources, uint32_t count, size_t length) noexcept nogil
cdef bint recover(uint32_t data_count, const uint8_t** data, const size_t* data_lengths,
                  const uint8_t** parity, const uint32_t* parity_rows, uint32_t parity_count,
                  size_t symbol_length, uint8_t* out, uint32_t out_symbols) noexcept nogil
