/* CRC-32C (Castagnoli), slice-by-8.
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
DDC_CRC32C_TARGET
static uint32_t ddc_crc32c_hardware(uint32_t crc, const uint8_t *data, size_t length) {
    uint64_t state = (uint32_t)~crc;
    while (length && ((uintptr_t)data & 7)) {
        state = DDC_CRC32C_STEP1(state, *data++);
        length--;
    }
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
        ddc_crc32c_chosen = ddc_crc32c_hardware;
        ddc_crc32c_name = DDC_CRC32C_HARDWARE_NAME;
    }
#endif
}

static inline uint32_t ddc_crc32c_update(uint32_t crc, const uint8_t *data, size_t length) {
    return ddc_crc32c_chosen(crc, data, length);
}

#endif
