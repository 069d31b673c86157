/* CRC-32C (Castagnoli): the CPU instruction on three interleaved streams, else slice-by-8.
 *
 * The instruction has a latency of three cycles and a throughput of one, so one
 * stream uses a third of it; three streams over consecutive stripes of a buffer
 * are combined by shifting a CRC over a stripe of zeros, a fixed linear map done
 * with four table lookups (the method of Mark Adler's crc32c.c).
 *
 * Hand-written because the checksum runs once per datagram inside GIL-free
 * loops: a Python-level library (crc32c, zlib) would need the GIL per call, and
 * no C library for it can be relied on at build time on every target
 * (x86_64 and aarch64 manylinux). Slice-by-8 runs at several GB/s, well above
 * the loopback datagram rate. */
#ifndef DDC_CRC32C_H
#define DDC_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#elif defined(__aarch64__)
#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif

static uint32_t ddc_crc32c_table[8][256];
static int ddc_crc32c_ready = 0;

static void ddc_crc32c_build_tables(void) {
    if (ddc_crc32c_ready) return;
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = n;
        for (int k = 0; k < 8; k++) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        ddc_crc32c_table[0][n] = crc;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = ddc_crc32c_table[0][n];
        for (int k = 1; k < 8; k++) {
            crc = ddc_crc32c_table[0][crc & 0xff] ^ (crc >> 8);
            ddc_crc32c_table[k][n] = crc;
        }
    }
    ddc_crc32c_ready = 1;
}

/* Continues a running CRC: start with crc = 0, feed pieces in order. */
static uint32_t ddc_crc32c_slice8(uint32_t crc, const uint8_t *data, size_t length) {
    crc = ~crc;
    while (length && ((uintptr_t)data & 7)) {
        crc = ddc_crc32c_table[0][(crc ^ *data++) & 0xff] ^ (crc >> 8);
        length--;
    }
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, data, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        word = __builtin_bswap64(word);
#endif
        word ^= crc;
        crc = ddc_crc32c_table[7][word & 0xff] ^ ddc_crc32c_table[6][(word >> 8) & 0xff] ^
              ddc_crc32c_table[5][(word >> 16) & 0xff] ^ ddc_crc32c_table[4][(word >> 24) & 0xff] ^
              ddc_crc32c_table[3][(word >> 32) & 0xff] ^ ddc_crc32c_table[2][(word >> 40) & 0xff] ^
              ddc_crc32c_table[1][(word >> 48) & 0xff] ^ ddc_crc32c_table[0][word >> 56];
        data += 8;
        length -= 8;
    }
    while (length--) crc = ddc_crc32c_table[0][(crc ^ *data++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* One loop for both instructions; only the step functions and the target differ. */
#if defined(__x86_64__)
#define DDC_CRC32C_TARGET __attribute__((target("sse4.2")))
#define DDC_CRC32C_STEP8(state, word) _mm_crc32_u64((state), (word))
#define DDC_CRC32C_STEP1(state, byte) _mm_crc32_u8((uint32_t)(state), (byte))
#define DDC_CRC32C_HARDWARE_NAME "sse4.2"
static int ddc_crc32c_cpu_has_instruction(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
}
#elif defined(__aarch64__)
#define DDC_CRC32C_TARGET __attribute__((target("+crc")))
#define DDC_CRC32C_STEP8(state, word) __crc32cd((uint32_t)(state), (word))
#define DDC_CRC32C_STEP1(state, byte) __crc32cb((uint32_t)(state), (byte))
#define DDC_CRC32C_HARDWARE_NAME "armv8-crc"
static int ddc_crc32c_cpu_has_instruction(void) {
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
}
#endif

#ifdef DDC_CRC32C_TARGET
#define DDC_CRC32C_LONG 2048
#define DDC_CRC32C_SHORT 256
static uint32_t ddc_crc32c_long_zeros[4][256];
static uint32_t ddc_crc32c_short_zeros[4][256];

static uint32_t ddc_gf2_matrix_times(const uint32_t *matrix, uint32_t vector) {
    uint32_t sum = 0;
    while (vector) {
        if (vector & 1) sum ^= *matrix;
        vector >>= 1;
        matrix++;
    }
    return sum;
}

static void ddc_gf2_matrix_square(uint32_t *square, const uint32_t *matrix) {
    for (int n = 0; n < 32; n++) square[n] = ddc_gf2_matrix_times(matrix, matrix[n]);
}

/* Tables that advance a CRC over length zero bytes. */
static void ddc_crc32c_build_zeros(uint32_t zeros[4][256], size_t length) {
    uint32_t even[32], odd[32], row = 1;
    odd[0] = 0x82F63B78u; /* one zero bit */
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    ddc_gf2_matrix_square(even, odd); /* two zero bits */
    ddc_gf2_matrix_square(odd, even); /* four */
    for (;;) {                        /* then each square doubles: eight bits (one byte), two bytes, ... */
        ddc_gf2_matrix_square(even, odd);
        length >>= 1;
        if (length == 0) {
            memcpy(odd, even, sizeof(odd));
            break;
        }
        ddc_gf2_matrix_square(odd, even);
        length >>= 1;
        if (length == 0) break;
    }
    for (uint32_t n = 0; n < 256; n++) {
        zeros[0][n] = ddc_gf2_matrix_times(odd, n);
        zeros[1][n] = ddc_gf2_matrix_times(odd, n << 8);
        zeros[2][n] = ddc_gf2_matrix_times(odd, n << 16);
        zeros[3][n] = ddc_gf2_matrix_times(odd, n << 24);
    }
}

static inline uint64_t ddc_crc32c_shift(uint32_t zeros[4][256], uint64_t crc) {
    return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^ zeros[2][(crc >> 16) & 0xff] ^
           zeros[3][(crc >> 24) & 0xff];
}

/* Consumes whole rounds of three stripes from *data. */
DDC_CRC32C_TARGET __attribute__((always_inline))
static inline uint64_t ddc_crc32c_rounds(uint64_t state, const uint8_t **data, size_t *length, const size_t stripe,
                                         uint32_t zeros[4][256]) {
    const uint8_t *next = *data;
    while (*length >= 3 * stripe) {
        uint64_t second = 0, third = 0, word;
        const uint8_t *end = next + stripe;
        do {
            memcpy(&word, next, 8);
            state = DDC_CRC32C_STEP8(state, word);
            memcpy(&word, next + stripe, 8);
            second = DDC_CRC32C_STEP8(second, word);
            memcpy(&word, next + 2 * stripe, 8);
            third = DDC_CRC32C_STEP8(third, word);
            next += 8;
        } while (next < end);
        state = ddc_crc32c_shift(zeros, state) ^ second;
        state = ddc_crc32c_shift(zeros, state) ^ third;
        next += 2 * stripe;
        *length -= 3 * stripe;
    }
    *data = next;
    return state;
}

DDC_CRC32C_TARGET
static uint32_t ddc_crc32c_hardware(uint32_t crc, const uint8_t *data, size_t length) {
    uint64_t state = (uint32_t)~crc;
    while (length && ((uintptr_t)data & 7)) {
        state = DDC_CRC32C_STEP1(state, *data++);
        length--;
    }
    state = ddc_crc32c_rounds(state, &data, &length, DDC_CRC32C_LONG, ddc_crc32c_long_zeros);
    state = ddc_crc32c_rounds(state, &data, &length, DDC_CRC32C_SHORT, ddc_crc32c_short_zeros);
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, data, 8);
        state = DDC_CRC32C_STEP8(state, word);
        data += 8;
        length -= 8;
    }
    while (length--) state = DDC_CRC32C_STEP1(state, *data++);
    return ~(uint32_t)state;
}
#endif

typedef uint32_t (*ddc_crc32c_function)(uint32_t, const uint8_t *, size_t);
static ddc_crc32c_function ddc_crc32c_chosen = ddc_crc32c_slice8;
static const char *ddc_crc32c_name = "slice-by-8";

static void ddc_crc32c_init(void) {
    ddc_crc32c_build_tables();
#ifdef DDC_CRC32C_TARGET
    if (ddc_crc32c_cpu_has_instruction()) {
        ddc_crc32c_build_zeros(ddc_crc32c_long_zeros, DDC_CRC32C_LONG);
        ddc_crc32c_build_zeros(ddc_crc32c_short_zeros, DDC_CRC32C_SHORT);
        ddc_crc32c_chosen = ddc_crc32c_hardware;
        ddc_crc32c_name = DDC_CRC32C_HARDWARE_NAME;
    }
#endif
}

static inline uint32_t ddc_crc32c_update(uint32_t crc, const uint8_t *data, size_t length) {
    return ddc_crc32c_chosen(crc, data, length);
}

#endif
