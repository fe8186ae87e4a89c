/* quant.h — ggml's block-quantised weight formats decoded to f32 (private to src/model).
 *
 * One function per format, the signature of nl_dtype_info.to_f32: dst (n) = the n / QK values
 * of the n / QK blocks at src (n a multiple of the block size QK; src may be unaligned).
 * Formats (ggml-common.h; d, m, dmin are IEEE half floats, little-endian):
 *   Q4_0  32 in 18 B: d, 16 B of 4-bit q          x = (q - 8)·d          (low nibbles are 0..15, high 16..31)
 *   Q4_1  32 in 20 B: d, m, 16 B                   x = q·d + m
 *   Q5_0  32 in 22 B: d, u32 high bits, 16 B       x = (q - 16)·d         (q = nibble | high bit << 4)
 *   Q5_1  32 in 24 B: d, m, u32 high bits, 16 B    x = q·d + m
 *   Q8_0  32 in 34 B: d, 32 int8                   x = q·d
 *   Q2_K  256 in 84 B: 16 (scale | min << 4), 64 B of 2-bit q, d, dmin    x = d·sc·q - dmin·mn
 *   Q3_K  256 in 110 B: 32 B high bits, 64 B 2-bit q, 12 B 6-bit scales, d   x = d·(sc - 32)·(q - 4·!hbit)
 *   Q4_K  256 in 144 B: d, dmin, 12 B 6-bit scales/mins, 128 B 4-bit q      x = d·sc·q - dmin·mn
 *   Q5_K  256 in 176 B: d, dmin, 12 B scales/mins, 32 B high bits, 128 B    x = d·sc·q - dmin·mn
 *   Q6_K  256 in 210 B: 128 B low 4 bits, 64 B high 2 bits, 16 int8 scales, d   x = d·sc·(q - 32)
 * Every value is computed with ggml's float operations in ggml's order (dequantize_row_* of
 * ggml-quants.c), so the output equals ggml's bit for bit (no fused multiply-add: this file is
 * built without -mfma).
 * Checked by tests/test_gguf.c (the ../shared GGUF fixtures' SHA-256 of every dequantised
 * tensor, and hand-made blocks of every format).
 */
#ifndef NEURONLAB_MODEL_QUANT_H
#define NEURONLAB_MODEL_QUANT_H

#include <stdint.h>

void nl_dequant_q4_0(const void *src, float *dst, int64_t n);
void nl_dequant_q4_1(const void *src, float *dst, int64_t n);
void nl_dequant_q5_0(const void *src, float *dst, int64_t n);
void nl_dequant_q5_1(const void *src, float *dst, int64_t n);
void nl_dequant_q8_0(const void *src, float *dst, int64_t n);
void nl_dequant_q2_k(const void *src, float *dst, int64_t n);
void nl_dequant_q3_k(const void *src, float *dst, int64_t n);
void nl_dequant_q4_k(const void *src, float *dst, int64_t n);
void nl_dequant_q5_k(const void *src, float *dst, int64_t n);
void nl_dequant_q6_k(const void *src, float *dst, int64_t n);

/* f32 → Q8_0 (ggml's quantize_row_q8_0_ref): per block of 32, d = amax / 127 (float),
 * q = roundf(x · (1/d)) (half away from zero; 0 when d = 0), the scale stored as IEEE half of d.
 * n a multiple of 32; dst holds n / 32 blocks of 34 bytes. */
void nl_quant_q8_0(const float *src, void *dst, int64_t n);

#endif
