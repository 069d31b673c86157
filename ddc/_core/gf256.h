/* Arithmetic in GF(2^8) for the erasure code in fec.pyx, with AES's polynomial
 * 0x11B (generator 3) so that x86's GFNI instruction multiplies 32 bytes at once.
 *
 * The one hot operation is dst ^= c * src over a whole datagram. Where GFNI is
 * missing it uses the split-nibble method: c * x = low[c][x & 15] ^ high[c][x >> 4],
 * where both 16-entry tables fit one vector register and a byte shuffle (PSHUFB on
 * x86, TBL on ARM64) looks up 16 or 32 bytes at once. GFNI, AVX2 and SSSE3 are
 * chosen at run time on x86_64; NEON is always present on aarch64; anything else
 * uses the plain 64 KiB multiplication table.
 */
#ifndef DDC_GF256_H
#define DDC_GF256_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

static uint8_t ddc_gf_exp[512];
static uint8_t ddc_gf_log[256];
static uint8_t ddc_gf_product[256][256];
static uint8_t ddc_gf_low[256][16];
static uint8_t ddc_gf_high[256][16];

static inline uint8_t ddc_gf_mul(uint8_t a, uint8_t b) { return ddc_gf_product[a][b]; }

static inline uint8_t ddc_gf_inverse(uint8_t a) { return a ? ddc_gf_exp[255 - ddc_gf_log[a]] : 0; }

static void ddc_gf_mul_add_table(uint8_t *dst, const uint8_t *src, size_t length, uint8_t c) {
    const uint8_t *row = ddc_gf_product[c];
    size_t i;
    for (i = 0; i < length; i++) dst[i] ^= row[src[i]];
}

#if defined(__x86_64__)
#define DDC_GF_VECTOR_NAME_AVX2 "avx2"
#define DDC_GF_VECTOR_NAME_SSSE3 "ssse3"

__attribute__((target("avx2")))
static void ddc_gf_mul_add_avx2(uint8_t *dst, const uint8_t *src, size_t length, uint8_t c) {
    const __m128i low16 = _mm_loadu_si128((const __m128i *)ddc_gf_low[c]);
    const __m128i high16 = _mm_loadu_si128((const __m128i *)ddc_gf_high[c]);
    const __m256i low = _mm256_broadcastsi128_si256(low16), high = _mm256_broadcastsi128_si256(high16);
    const __m256i mask = _mm256_set1_epi8(0x0f);
    size_t i = 0;
    for (; i + 32 <= length; i += 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i product = _mm256_xor_si256(_mm256_shuffle_epi8(low, _mm256_and_si256(x, mask)),
                                           _mm256_shuffle_epi8(high, _mm256_and_si256(_mm256_srli_epi64(x, 4), mask)));
        __m256i d = _mm256_loadu_si256((const __m256i *)(dst + i));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(d, product));
    }
    ddc_gf_mul_add_table(dst + i, src + i, length - i, c);
}

__attribute__((target("gfni,avx2")))
static void ddc_gf_mul_add_gfni(uint8_t *dst, const uint8_t *src, size_t length, uint8_t c) {
    const __m256i factor = _mm256_set1_epi8((char)c);
    size_t i = 0;
    for (; i + 32 <= length; i += 32) {
        __m256i product = _mm256_gf2p8mul_epi8(_mm256_loadu_si256((const __m256i *)(src + i)), factor);
        __m256i d = _mm256_loadu_si256((const __m256i *)(dst + i));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(d, product));
    }
    ddc_gf_mul_add_table(dst + i, src + i, length - i, c);
}

__attribute__((target("gfni,avx2")))
static void ddc_gf_mul_add_rows_gfni(uint8_t **targets, size_t offset, const uint8_t *factors, unsigned int rows,
                                     const uint8_t *src, size_t length) {
    __m256i factor[4];
    unsigned int r;
    size_t i = 0;
    for (r = 0; r < rows; r++) factor[r] = _mm256_set1_epi8((char)factors[r]);
    for (; i + 32 <= length; i += 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(src + i));
        for (r = 0; r < rows; r++) {
            uint8_t *d = targets[r] + offset + i;
            __m256i product = _mm256_gf2p8mul_epi8(x, factor[r]);
            _mm256_storeu_si256((__m256i *)d, _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)d), product));
        }
    }
    for (r = 0; r < rows; r++) ddc_gf_mul_add_table(targets[r] + offset + i, src + i, length - i, factors[r]);
}

/* The same for up to four targets at once: the source is loaded and split into nibbles once. */
__attribute__((target("avx2")))
static void ddc_gf_mul_add_rows_avx2(uint8_t **targets, size_t offset, const uint8_t *factors, unsigned int rows,
                                     const uint8_t *src, size_t length) {
    const __m256i mask = _mm256_set1_epi8(0x0f);
    __m256i low[4], high[4];
    unsigned int r;
    size_t i = 0;
    for (r = 0; r < rows; r++) {
        low[r] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ddc_gf_low[factors[r]]));
        high[r] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ddc_gf_high[factors[r]]));
    }
    for (; i + 32 <= length; i += 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i x_low = _mm256_and_si256(x, mask), x_high = _mm256_and_si256(_mm256_srli_epi64(x, 4), mask);
        for (r = 0; r < rows; r++) {
            uint8_t *d = targets[r] + offset + i;
            __m256i product = _mm256_xor_si256(_mm256_shuffle_epi8(low[r], x_low), _mm256_shuffle_epi8(high[r], x_high));
            _mm256_storeu_si256((__m256i *)d, _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)d), product));
        }
    }
    for (r = 0; r < rows; r++) ddc_gf_mul_add_table(targets[r] + offset + i, src + i, length - i, factors[r]);
}

__attribute__((target("ssse3")))
static void ddc_gf_mul_add_ssse3(uint8_t *dst, const uint8_t *src, size_t length, uint8_t c) {
    const __m128i low = _mm_loadu_si128((const __m128i *)ddc_gf_low[c]);
    const __m128i high = _mm_loadu_si128((const __m128i *)ddc_gf_high[c]);
    const __m128i mask = _mm_set1_epi8(0x0f);
    size_t i = 0;
    for (; i + 16 <= length; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i product = _mm_xor_si128(_mm_shuffle_epi8(low, _mm_and_si128(x, mask)),
                                        _mm_shuffle_epi8(high, _mm_and_si128(_mm_srli_epi64(x, 4), mask)));
        __m128i d = _mm_loadu_si128((const __m128i *)(dst + i));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(d, product));
    }
    ddc_gf_mul_add_table(dst + i, src + i, length - i, c);
}
#elif defined(__aarch64__)
static void ddc_gf_mul_add_neon(uint8_t *dst, const uint8_t *src, size_t length, uint8_t c) {
    const uint8x16_t low = vld1q_u8(ddc_gf_low[c]), high = vld1q_u8(ddc_gf_high[c]);
    const uint8x16_t mask = vdupq_n_u8(0x0f);
    size_t i = 0;
    for (; i + 16 <= length; i += 16) {
        uint8x16_t x = vld1q_u8(src + i);
        uint8x16_t product = veorq_u8(vqtbl1q_u8(low, vandq_u8(x, mask)), vqtbl1q_u8(high, vshrq_n_u8(x, 4)));
        vst1q_u8(dst + i, veorq_u8(vld1q_u8(dst + i), product));
    }
    ddc_gf_mul_add_table(dst + i, src + i, length - i, c);
}
#endif

typedef void (*ddc_gf_mul_add_function)(uint8_t *, const uint8_t *, size_t, uint8_t);
static ddc_gf_mul_add_function ddc_gf_mul_add_chosen = ddc_gf_mul_add_table;
static const char *ddc_gf_name = "table";

static void ddc_gf_init(void) {
    unsigned int x = 1, i, a, b;
    for (i = 0; i < 255; i++) {
        ddc_gf_exp[i] = (uint8_t)x;
        ddc_gf_log[x] = (uint8_t)i;
        x ^= x << 1;
        if (x & 0x100) x ^= 0x11b;
    }
    for (i = 255; i < 512; i++) ddc_gf_exp[i] = ddc_gf_exp[i - 255];
    for (a = 0; a < 256; a++)
        for (b = 0; b < 256; b++)
            ddc_gf_product[a][b] = (a && b) ? ddc_gf_exp[ddc_gf_log[a] + ddc_gf_log[b]] : 0;
    for (a = 0; a < 256; a++)
        for (b = 0; b < 16; b++) {
            ddc_gf_low[a][b] = ddc_gf_product[a][b];
            ddc_gf_high[a][b] = ddc_gf_product[a][b << 4];
        }
}

/* The vector multiply this CPU has, or with portable set the table one (to test one against the other). */
static void ddc_gf_choose(int portable) {
    ddc_gf_mul_add_chosen = ddc_gf_mul_add_table;
    ddc_gf_name = "table";
    if (portable) return;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("gfni") && __builtin_cpu_supports("avx2")) {
        ddc_gf_mul_add_chosen = ddc_gf_mul_add_gfni;
        ddc_gf_name = "gfni";
    } else if (__builtin_cpu_supports("avx2")) {
        ddc_gf_mul_add_chosen = ddc_gf_mul_add_avx2;
        ddc_gf_name = DDC_GF_VECTOR_NAME_AVX2;
    } else if (__builtin_cpu_supports("ssse3")) {
        ddc_gf_mul_add_chosen = ddc_gf_mul_add_ssse3;
        ddc_gf_name = DDC_GF_VECTOR_NAME_SSSE3;
    }
#elif defined(__aarch64__)
    ddc_gf_mul_add_chosen = ddc_gf_mul_add_neon;
    ddc_gf_name = "neon";
#endif
}

/* targets[r][offset:] ^= factors[r] * src for every row r. */
static void ddc_gf_mul_add_rows(uint8_t **targets, size_t offset, const uint8_t *factors, unsigned int rows,
                                const uint8_t *src, size_t length) {
    unsigned int r, group;
#if defined(__x86_64__)
    if (ddc_gf_mul_add_chosen == ddc_gf_mul_add_avx2 || ddc_gf_mul_add_chosen == ddc_gf_mul_add_gfni) {
        for (r = 0; r < rows; r += group) {
            group = rows - r < 4 ? rows - r : 4;
            if (ddc_gf_mul_add_chosen == ddc_gf_mul_add_gfni)
                ddc_gf_mul_add_rows_gfni(targets + r, offset, factors + r, group, src, length);
            else
                ddc_gf_mul_add_rows_avx2(targets + r, offset, factors + r, group, src, length);
        }
        return;
    }
#endif
    for (r = 0; r < rows; r++) ddc_gf_mul_add_chosen(targets[r] + offset, src, length, factors[r]);
    (void)group;
}

/* dst ^= c * src, byte by byte; c = 0 adds nothing and c = 1 is a plain XOR. */
static inline void ddc_gf_mul_add(uint8_t *dst, const uint8_t *src, size_t length, uint8_t c) {
    size_t i;
    if (c == 0) return;
    if (c == 1) {
        for (i = 0; i < length; i++) dst[i] ^= src[i];
        return;
    }
    ddc_gf_mul_add_chosen(dst, src, length, c);
}

#endif
