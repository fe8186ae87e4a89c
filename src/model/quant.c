/* quant.c — dequantisers of ggml's block formats (see quant.h for the layouts).
 * Written from the format definitions (ggml-common.h block structs and the arithmetic of
 * ggml-quants.c dequantize_row_*); each value is computed in float in ggml's order. */
#include "model/quant.h"

#include <math.h>
#include <string.h>

#include "neuronlab/common.h"

static inline float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return nl_f16_to_f32(h);
}

void nl_dequant_q4_0(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += 18, y += 32) {
        const float d = h2f(b);
        const uint8_t *q = b + 2;
        for (int j = 0; j < 16; j++) {
            const int x0 = (q[j] & 0x0F) - 8, x1 = (q[j] >> 4) - 8;
            y[j] = (float)x0 * d;
            y[j + 16] = (float)x1 * d;
        }
    }
}

void nl_dequant_q4_1(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += 20, y += 32) {
        const float d = h2f(b), m = h2f(b + 2);
        const uint8_t *q = b + 4;
        for (int j = 0; j < 16; j++) {
            const int x0 = q[j] & 0x0F, x1 = q[j] >> 4;
            y[j] = (float)x0 * d + m;
            y[j + 16] = (float)x1 * d + m;
        }
    }
}

void nl_dequant_q5_0(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += 22, y += 32) {
        const float d = h2f(b);
        uint32_t qh;
        memcpy(&qh, b + 2, 4);
        const uint8_t *q = b + 6;
        for (int j = 0; j < 16; j++) {
            const uint8_t h0 = (uint8_t)(((qh >> j) << 4) & 0x10), h1 = (uint8_t)((qh >> (j + 12)) & 0x10);
            const int x0 = ((q[j] & 0x0F) | h0) - 16, x1 = ((q[j] >> 4) | h1) - 16;
            y[j] = (float)x0 * d;
            y[j + 16] = (float)x1 * d;
        }
    }
}

void nl_dequant_q5_1(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += 24, y += 32) {
        const float d = h2f(b), m = h2f(b + 2);
        uint32_t qh;
        memcpy(&qh, b + 4, 4);
        const uint8_t *q = b + 8;
        for (int j = 0; j < 16; j++) {
            const uint8_t h0 = (uint8_t)(((qh >> j) << 4) & 0x10), h1 = (uint8_t)((qh >> (j + 12)) & 0x10);
            const int x0 = (q[j] & 0x0F) | h0, x1 = (q[j] >> 4) | h1;
            y[j] = (float)x0 * d + m;
            y[j + 16] = (float)x1 * d + m;
        }
    }
}

void nl_dequant_q8_0(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += 34, y += 32) {
        const float d = h2f(b);
        const int8_t *q = (const int8_t *)(b + 2);
        for (int j = 0; j < 32; j++) y[j] = (float)q[j] * d;
    }
}

void nl_dequant_q2_k(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 256; i++, b += 84) {
        const uint8_t *sc = b, *q = b + 16;
        const float d = h2f(b + 80), dmin = h2f(b + 82);
        int is = 0;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int part = 0; part < 2; part++) {
                    const uint8_t s = sc[is++];
                    const float dl = d * (float)(s & 0x0F), ml = dmin * (float)(s >> 4);
                    const uint8_t *qq = q + 16 * part;
                    for (int l = 0; l < 16; l++) *y++ = dl * (float)((int8_t)((qq[l] >> shift) & 3)) - ml;
                }
            }
        }
    }
}

void nl_dequant_q3_k(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 256; i++, b += 110) {
        const uint8_t *hm = b, *q = b + 32, *s = b + 96;
        const float d_all = h2f(b + 108);
        /* 16 6-bit scales: low 4 bits in s[0..7] (two per byte), high 2 bits in s[8..11] */
        int8_t scales[16];
        for (int j = 0; j < 16; j++) {
            const int lo = j < 8 ? (s[j] & 0x0F) : (s[j - 8] >> 4);
            const int hi = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
            scales[j] = (int8_t)(lo | (hi << 4));
        }
        uint8_t m = 1;
        int is = 0;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int part = 0; part < 2; part++) {
                    const float dl = d_all * (float)(scales[is++] - 32);
                    const uint8_t *qq = q + 16 * part, *hh = hm + 16 * part;
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * (float)((int8_t)((qq[l] >> shift) & 3) - ((hh[l] & m) ? 0 : 4));
                }
            }
        }
    }
}

/* 6-bit scale and min j (0..7) of a Q4_K / Q5_K super-block */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void nl_dequant_q4_k(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 256; i++, b += 144) {
        const float d = h2f(b), dmin = h2f(b + 2);
        const uint8_t *sc = b + 4, *q = b + 16;
        for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
            uint8_t s, mn;
            scale_min_k4(is, sc, &s, &mn);
            const float d1 = d * (float)s, m1 = dmin * (float)mn;
            scale_min_k4(is + 1, sc, &s, &mn);
            const float d2 = d * (float)s, m2 = dmin * (float)mn;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0x0F) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

void nl_dequant_q5_k(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 256; i++, b += 176) {
        const float d = h2f(b), dmin = h2f(b + 2);
        const uint8_t *sc = b + 4, *qh = b + 16, *ql = b + 48;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
            uint8_t s, mn;
            scale_min_k4(is, sc, &s, &mn);
            const float d1 = d * (float)s, m1 = dmin * (float)mn;
            scale_min_k4(is + 1, sc, &s, &mn);
            const float d2 = d * (float)s, m2 = dmin * (float)mn;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0x0F) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

void nl_dequant_q6_k(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 256; i++, b += 210) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        const float d = h2f(b + 208);
        for (int half = 0; half < 2; half++, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* ---- quantisation ------------------------------------------------------------------------- */

void nl_quant_q8_0(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / 32; i++, b += 34, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            const float v = fabsf(x[j]);
            if (v > amax) amax = v;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t h = nl_f32_to_f16(d);
        memcpy(b, &h, 2);
        int8_t *q = (int8_t *)(b + 2);
        for (int j = 0; j < 32; j++) q[j] = (int8_t)roundf(x[j] * id);
    }
}
