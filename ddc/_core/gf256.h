/* Arithmetic in GF(2^8) for the erasure code in fec.pyx, with AES's polynomial
 * 0x11B (generator 3) so that x86's GFNI instruction multiplies 32 bytes at once.
 *
 * The one hot operation is dst ^= c * src over a whole datagram. Where GFNI is
 * missing it uses the split-nibble method: c * x = low[c][x & 15] ^ high[c][x >> 4],
 * where both 16-entry tables fit one vector register and a byte shuffle (PSHUFB on
 * x86, TBL on ARM64) looks up 16 or 32 bytes at once. GFNI (on 64 bytes with
 * AVX-512, else 32), AVX2 and SSSE3 are chosen at run time on x86_64; NEON is always
 * present on aarch64; anything else uses the plain 64 KiB multiplication table.
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

/* The multiplies, best first. */
enum ddc_gf_kind { DDC_GF_GFNI_AVX512, DDC_GF_GFNI, DDC_GF_AVX2, DDC_GF_SSSE3, DDC_GF_NEON, DDC_GF_TABLE, DDC_GF_KINDS };
static const char *const ddc_gf_kind_names[DDC_GF_KINDS] = {"gfni-avx512", "gfni", "avx2", "ssse3", "neon", "table"};
static enum ddc_gf_kind ddc_gf_kind = DDC_GF_TABLE;
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

static int ddc_gf_runs(enum ddc_gf_kind kind) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    switch (kind) {
    case DDC_GF_GFNI_AVX512:
        return __builtin_cpu_supports("gfni") && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw");
    case DDC_GF_GFNI: return __builtin_cpu_supports("gfni") && __builtin_cpu_supports("avx2");
    case DDC_GF_AVX2: return __builtin_cpu_supports("avx2");
    case DDC_GF_SSSE3: return __builtin_cpu_supports("ssse3");
    default: return kind == DDC_GF_TABLE;
    }
#elif defined(__aarch64__)
    return kind == DDC_GF_NEON || kind == DDC_GF_TABLE;
#else
    return kind == DDC_GF_TABLE;
#endif
}

/* Uses the multiply named (one of ddc_gf_kind_names), or with NULL the best this CPU runs; 0 if it
 * cannot run the one named. Naming one lets the tests compare them all on one machine. */
static int ddc_gf_choose(const char *name) {
    int kind;
    for (kind = 0; kind < DDC_GF_KINDS; kind++) {
        if (!ddc_gf_runs((enum ddc_gf_kind)kind) || (name && strcmp(name, ddc_gf_kind_names[kind]) != 0)) continue;
        ddc_gf_kind = (enum ddc_gf_kind)kind;
        ddc_gf_name = ddc_gf_kind_names[kind];
        switch (ddc_gf_kind) {
#if defined(__x86_64__)
        case DDC_GF_GFNI_AVX512:
        case DDC_GF_GFNI: ddc_gf_mul_add_chosen = ddc_gf_mul_add_gfni; break;
        case DDC_GF_AVX2: ddc_gf_mul_add_chosen = ddc_gf_mul_add_avx2; break;
        case DDC_GF_SSSE3: ddc_gf_mul_add_chosen = ddc_gf_mul_add_ssse3; break;
#elif defined(__aarch64__)
        case DDC_GF_NEON: ddc_gf_mul_add_chosen = ddc_gf_mul_add_neon; break;
#endif
        default: ddc_gf_mul_add_chosen = ddc_gf_mul_add_table; break;
        }
        return 1;
    }
    return 0;
}

/* targets[r][offset + i] ^= sum over s of factors[r * count + s] * sources[s][i], for i < length.
 *
 * The sender's encode at batch time: each parity row is loaded and stored once
 * per 32 bytes for all the batch's datagrams of its block, instead of once per
 * datagram, and each source is loaded once per tile of rows. */
#if defined(__x86_64__)
#define DDC_GF_TILE_ROWS 8

/* Calls tile with the row count as a literal, so that the tile's loops over rows unroll. */
#define DDC_GF_WITH_CONSTANT_ROWS(tile, rows, targets, offset, factor, sources, count, length) \
    switch (rows) { \
    case 8: tile(targets, offset, factor, 8, sources, count, length); break; \
    case 7: tile(targets, offset, factor, 7, sources, count, length); break; \
    case 6: tile(targets, offset, factor, 6, sources, count, length); break; \
    case 5: tile(targets, offset, factor, 5, sources, count, length); break; \
    case 4: tile(targets, offset, factor, 4, sources, count, length); break; \
    case 3: tile(targets, offset, factor, 3, sources, count, length); break; \
    case 2: tile(targets, offset, factor, 2, sources, count, length); break; \
    default: tile(targets, offset, factor, 1, sources, count, length); break; \
    }

/* ROWS is a constant at each call, so the accumulators stay in registers. The last partial 32 bytes go
 * through a zero-padded copy rather than byte by byte. */
__attribute__((target("gfni,avx2"), always_inline))
static inline void ddc_gf_dot_tile_gfni(uint8_t **targets, size_t offset, const __m256i *factor, const unsigned int ROWS,
                                        const uint8_t *const *sources, unsigned int count, size_t length) {
    unsigned int r, s;
    size_t i, tail = length & 31;
    uint8_t padded[DDC_GF_TILE_ROWS + 1][32];
    for (i = 0; i + 32 <= length; i += 32) {
        __m256i acc[DDC_GF_TILE_ROWS];
#pragma GCC unroll 8
        for (r = 0; r < ROWS; r++) acc[r] = _mm256_loadu_si256((const __m256i *)(targets[r] + offset + i));
        for (s = 0; s < count; s++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(sources[s] + i));
#pragma GCC unroll 8
            for (r = 0; r < ROWS; r++)
                acc[r] = _mm256_xor_si256(acc[r], _mm256_gf2p8mul_epi8(x, factor[r * count + s]));
        }
#pragma GCC unroll 8
        for (r = 0; r < ROWS; r++) _mm256_storeu_si256((__m256i *)(targets[r] + offset + i), acc[r]);
    }
    if (tail) {
        __m256i acc[DDC_GF_TILE_ROWS];
        memset(padded, 0, sizeof(padded));
        for (r = 0; r < ROWS; r++) {
            memcpy(padded[r], targets[r] + offset + i, tail);
            acc[r] = _mm256_loadu_si256((const __m256i *)padded[r]);
        }
        for (s = 0; s < count; s++) {
            memcpy(padded[DDC_GF_TILE_ROWS], sources[s] + i, tail);
            __m256i x = _mm256_loadu_si256((const __m256i *)padded[DDC_GF_TILE_ROWS]);
            for (r = 0; r < ROWS; r++)
                acc[r] = _mm256_xor_si256(acc[r], _mm256_gf2p8mul_epi8(x, factor[r * count + s]));
        }
        for (r = 0; r < ROWS; r++) {
            _mm256_storeu_si256((__m256i *)padded[r], acc[r]);
            memcpy(targets[r] + offset + i, padded[r], tail);
        }
    }
}

/* The same on 64 bytes at a time, and the tail under a byte mask instead of a padded copy. The multiplies
 * share their ports with the additions, so two sources' products go into a row with one three-way XOR
 * (VPTERNLOGQ, truth table 0x96) instead of two XORs: 12-19 % faster on cached data (docs/performance-history.md, session 13). */
__attribute__((target("gfni,avx512f,avx512bw"), always_inline))
static inline void ddc_gf_dot_tile_gfni_avx512(uint8_t **targets, size_t offset, const __m512i *factor,
                                               const unsigned int ROWS, const uint8_t *const *sources,
                                               unsigned int count, size_t length) {
    unsigned int r, s;
    size_t i;
    __mmask64 mask = ~(__mmask64)0;
    for (i = 0; i < length; i += 64) {
        __m512i acc[DDC_GF_TILE_ROWS];
        if (length - i < 64) mask = ~(__mmask64)0 >> (64 - (length - i));
#pragma GCC unroll 8
        for (r = 0; r < ROWS; r++) acc[r] = _mm512_maskz_loadu_epi8(mask, targets[r] + offset + i);
        for (s = 0; s + 1 < count; s += 2) {
            __m512i x = _mm512_maskz_loadu_epi8(mask, sources[s] + i);
            __m512i y = _mm512_maskz_loadu_epi8(mask, sources[s + 1] + i);
#pragma GCC unroll 8
            for (r = 0; r < ROWS; r++)
                acc[r] = _mm512_ternarylogic_epi64(acc[r], _mm512_gf2p8mul_epi8(x, factor[r * count + s]),
                                                   _mm512_gf2p8mul_epi8(y, factor[r * count + s + 1]), 0x96);
        }
        if (s < count) {
            __m512i x = _mm512_maskz_loadu_epi8(mask, sources[s] + i);
#pragma GCC unroll 8
            for (r = 0; r < ROWS; r++)
                acc[r] = _mm512_xor_si512(acc[r], _mm512_gf2p8mul_epi8(x, factor[r * count + s]));
        }
#pragma GCC unroll 8
        for (r = 0; r < ROWS; r++) _mm512_mask_storeu_epi8(targets[r] + offset + i, mask, acc[r]);
    }
}

/* The rows entry point of a GFNI tile: the factors broadcast once into vectors, then the tile per row count. */
#define DDC_GF_DOT_ROWS_GFNI(name, isa, vector, broadcast, tile) \
    __attribute__((target(isa))) \
    static void name(uint8_t **targets, size_t offset, const uint8_t *factors, unsigned int rows, \
                     const uint8_t *const *sources, unsigned int count, size_t length) { \
        vector factor[DDC_GF_TILE_ROWS * 64]; \
        unsigned int r, s; \
        for (r = 0; r < rows; r++) \
            for (s = 0; s < count; s++) factor[r * count + s] = broadcast((char)factors[r * count + s]); \
        DDC_GF_WITH_CONSTANT_ROWS(tile, rows, targets, offset, factor, sources, count, length); \
    }

DDC_GF_DOT_ROWS_GFNI(ddc_gf_dot_rows_gfni_avx512, "gfni,avx512f,avx512bw", __m512i, _mm512_set1_epi8,
                     ddc_gf_dot_tile_gfni_avx512)
DDC_GF_DOT_ROWS_GFNI(ddc_gf_dot_rows_gfni, "gfni,avx2", __m256i, _mm256_set1_epi8, ddc_gf_dot_tile_gfni)

__attribute__((target("avx2")))
static void ddc_gf_dot_rows_avx2(uint8_t **targets, size_t offset, const uint8_t *factors, unsigned int rows,
                                 const uint8_t *const *sources, unsigned int count, size_t length) {
    const __m256i mask = _mm256_set1_epi8(0x0f);
    unsigned int r, s;
    size_t i = 0;
    for (; i + 32 <= length; i += 32) {
        __m256i acc[DDC_GF_TILE_ROWS];
        for (r = 0; r < rows; r++) acc[r] = _mm256_loadu_si256((const __m256i *)(targets[r] + offset + i));
        for (s = 0; s < count; s++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(sources[s] + i));
            __m256i x_low = _mm256_and_si256(x, mask), x_high = _mm256_and_si256(_mm256_srli_epi64(x, 4), mask);
            for (r = 0; r < rows; r++) {
                const uint8_t c = factors[r * count + s];
                __m256i low = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ddc_gf_low[c]));
                __m256i high = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ddc_gf_high[c]));
                acc[r] = _mm256_xor_si256(acc[r], _mm256_xor_si256(_mm256_shuffle_epi8(low, x_low),
                                                                   _mm256_shuffle_epi8(high, x_high)));
            }
        }
        for (r = 0; r < rows; r++) _mm256_storeu_si256((__m256i *)(targets[r] + offset + i), acc[r]);
    }
    for (r = 0; r < rows; r++)
        for (s = 0; s < count; s++)
            ddc_gf_mul_add_table(targets[r] + offset + i, sources[s] + i, length - i, factors[r * count + s]);
}
#endif

/* count is at most 64 sources. */
static void ddc_gf_dot_rows(uint8_t **targets, size_t offset, const uint8_t *factors, unsigned int rows,
                            const uint8_t *const *sources, unsigned int count, size_t length) {
    unsigned int r, s;
#if defined(__x86_64__)
    unsigned int group;
    if (ddc_gf_kind == DDC_GF_GFNI_AVX512 || ddc_gf_kind == DDC_GF_GFNI || ddc_gf_kind == DDC_GF_AVX2) {
        for (r = 0; r < rows; r += group) {
            group = rows - r < DDC_GF_TILE_ROWS ? rows - r : DDC_GF_TILE_ROWS;
            if (ddc_gf_kind == DDC_GF_GFNI_AVX512)
                ddc_gf_dot_rows_gfni_avx512(targets + r, offset, factors + r * count, group, sources, count, length);
            else if (ddc_gf_kind == DDC_GF_GFNI)
                ddc_gf_dot_rows_gfni(targets + r, offset, factors + r * count, group, sources, count, length);
            else
                ddc_gf_dot_rows_avx2(targets + r, offset, factors + r * count, group, sources, count, length);
        }
        return;
    }
#endif
    for (r = 0; r < rows; r++)
        for (s = 0; s < count; s++)
            ddc_gf_mul_add_chosen(targets[r] + offset, sources[s], length, factors[r * count + s]);
}

/* targets[r][offset:] ^= factors[r] * src for every row r. */
static void ddc_gf_mul_add_rows(uint8_t **targets, size_t offset, const uint8_t *factors, unsigned int rows,
                                const uint8_t *src, size_t length) {
    ddc_gf_dot_rows(targets, offset, factors, rows, &src, 1, length);
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
