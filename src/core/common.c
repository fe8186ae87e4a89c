/* common.c — context, error messages, assertions, half-precision conversions, JSON text helpers.
 * Checked by tests/test_common.c. */
#include "neuronlab/common.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

volatile sig_atomic_t nl_interrupted = 0;

void nl_ctx_init(nl_ctx *ctx) {
    memset(ctx, 0, sizeof *ctx);
    ctx->progress = 1;
}

void nl_ctx_apply_threads(const nl_ctx *ctx) {
    if (ctx && ctx->n_threads > 0) omp_set_num_threads(ctx->n_threads);
}

nl_status nl_errorf(nl_ctx *ctx, nl_status st, const char *fmt, ...) {
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->msg, sizeof ctx->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

const char *nl_status_name(nl_status st) {
    switch (st) {
    case NL_OK: return "ok";
    case NL_EIO: return "i/o error";
    case NL_EFORMAT: return "bad format";
    case NL_EINVAL: return "invalid argument";
    case NL_ENOMEM: return "out of memory";
    case NL_EUNSUPPORTED: return "unsupported";
    case NL_EINTR: return "interrupted";
    }
    return "unknown status";
}

void nl_assert_fail(const char *cond, const char *file, int line) {
    fprintf(stderr, "neuronlab: assertion failed: %s (%s:%d)\n", cond, file, line);
    abort();
}

void *nl_malloc(size_t n) { return malloc(n ? n : 1); }
void *nl_calloc(size_t n, size_t size) { return calloc(n ? n : 1, size ? size : 1); }

float nl_float_ceil(double x) {
    float f = (float)x;
    if ((double)f < x) f = nextafterf(f, INFINITY);
    return f;
}

float nl_float_floor(double x) {
    float f = (float)x;
    if ((double)f > x) f = nextafterf(f, -INFINITY);
    return f;
}

double nl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

float nl_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: value = man · 2^-24 */
            float f = (float)man * 5.9604644775390625e-08f;
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t nl_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t exp = (x >> 23) & 0xff;
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* may carry into exponent: correct */
    return (uint16_t)h;
}

float nl_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t nl_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

void nl_json_cat(char *buf, size_t n, const char *v) {
    size_t k = strlen(buf);
    if (k + 3 >= n) return;
    buf[k++] = '"';
    for (const unsigned char *p = (const unsigned char *)v; *p && k + 8 < n; p++) {
        if (*p == '"' || *p == '\\') buf[k++] = '\\', buf[k++] = (char)*p;
        else if (*p < 0x20) k += (size_t)snprintf(buf + k, n - k, "\\u%04x", *p);
        else buf[k++] = (char)*p;
    }
    buf[k++] = '"';
    buf[k] = 0;
}

char *nl_json_num(char *buf, double v) {
    if (!isfinite(v)) {
        snprintf(buf, NL_JSON_NUM_SIZE, "null");
        return buf;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, NL_JSON_NUM_SIZE, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break; /* %.17g always round-trips */
    }
    return buf;
}
