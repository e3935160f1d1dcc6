// matmul.glsl: Y[n][m] = sum_k W[m,k] * X[n][k] (+ Y[n][m] when p.acc != 0)
// for the N tokens of a prefill chunk. Included by matmul_<type>.comp after
// it defines the weight type (see dequant.glsl).
//
// Each workgroup computes a BM x BN tile of Y (rows of W by tokens). The K
// dimension is walked BK at a time: the W tile is dequantized into shared
// memory as it is loaded, the X tile copied beside it, and each thread
// accumulates a TM x TN block in registers from them. Rows and tokens past
// the edge are loaded as zero and not stored, so any M, N and K work (K a
// multiple of 32 or 256 for quantized types, which makes every K tile whole).
//
// Bindings: 0 weights (rows back to back, GGUF layout), 1 X (f32, N rows of
// K), 2 Y (f32, rows of ldy floats). Offsets come as push constants because
// the host binds ranges starting at an aligned offset below the data.

#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_control_flow_attributes : enable

#define BM 64
#define BN 64
#define BK 32
#define TM 4
#define TN 4
#define THREADS 256  // (BM / TM) * (BN / TN)

layout(local_size_x = THREADS) in;

layout(set = 0, binding = 0) readonly buffer W16 { uint16_t w16[]; };
layout(set = 0, binding = 0) readonly buffer WF { float wf[]; };
layout(set = 0, binding = 1) readonly buffer X1 { float x[]; };
layout(set = 0, binding = 2) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint M;      // rows of W in this dispatch
    uint K;      // elements per row
    uint N;      // tokens in this dispatch
    uint w_off;  // row 0 of W, in uint16 words from the start of binding 0
    uint x_off;  // X[0][0], in floats from the start of binding 1
    uint y_off;  // Y[0][0], in floats from the start of binding 2
    uint ldy;    // floats from Y[n][m] to Y[n+1][m]
    uint acc;    // nonzero: add to Y instead of overwriting it
} p;

#define DQ_U16(i) w16[i]
#include "dequant.glsl"

// The +1 padding spreads the column-wise stores of a tile load over banks.
shared float ws[BK][BM + 1];
shared float xs[BK][BN + 1];

// load_w returns W[row][k..k+3] for the row starting at word `row`, with
// columns at or past K read as zero.
vec4 load_w(uint row, uint k) {
#if DQ_BLOCK > 1
    return dq_load4(row, k);  // K is a multiple of the block, itself of BK: never partial
#else
    vec4 v = vec4(0.0);
    [[unroll]] for (uint i = 0; i < 4; i++) {
        if (k + i < p.K) {
#if defined(DQ_F32)
            v[i] = wf[row / 2 + k + i];
#else
            v[i] = dq_load(row, k + i);
#endif
        }
    }
    return v;
#endif
}

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint m0 = gl_WorkGroupID.x * BM;
    uint n0 = gl_WorkGroupID.y * BN;
    uint stride = dq_row_u16(p.K);

    // Tile loads: thread tid fills row lr (of W, and of X) at columns lk..lk+7.
    uint lr = tid / 4;
    uint lk = 8 * (tid % 4);
    bool wrow_ok = m0 + lr < p.M;
    bool xrow_ok = n0 + lr < p.N;
    uint wrow = p.w_off + min(m0 + lr, p.M - 1) * stride;
    uint xrow = p.x_off + min(n0 + lr, p.N - 1) * p.K;

    // Compute: thread tid owns rows tm + 16 i and tokens tn + 16 j of the
    // tile, so neighbouring threads read neighbouring shared words.
    uint tm = tid % (BM / TM);
    uint tn = tid / (BM / TM);
    float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; i++) {
        [[unroll]] for (uint j = 0; j < TN; j++) {
            acc[i][j] = 0.0;
        }
    }

    for (uint k0 = 0; k0 < p.K; k0 += BK) {
        [[unroll]] for (uint h = 0; h < 8; h += 4) {
            uint k = k0 + lk + h;
            vec4 wv = wrow_ok ? load_w(wrow, k) : vec4(0.0);
            vec4 xv = vec4(0.0);
            [[unroll]] for (uint i = 0; i < 4; i++) {
                if (xrow_ok && k + i < p.K) {
                    xv[i] = x[xrow + k + i];
                }
            }
            [[unroll]] for (uint i = 0; i < 4; i++) {
                ws[lk + h + i][lr] = wv[i];
                xs[lk + h + i][lr] = xv[i];
            }
        }
        barrier();
        [[unroll]] for (uint k = 0; k < BK; k++) {
            float a[TM];
            float b[TN];
            [[unroll]] for (uint i = 0; i < TM; i++) {
                a[i] = ws[k][tm + i * (BM / TM)];
            }
            [[unroll]] for (uint j = 0; j < TN; j++) {
                b[j] = xs[k][tn + j * (BN / TN)];
            }
            [[unroll]] for (uint i = 0; i < TM; i++) {
                [[unroll]] for (uint j = 0; j < TN; j++) {
                    acc[i][j] += a[i] * b[j];
                }
            }
        }
        barrier();
    }

    [[unroll]] for (uint j = 0; j < TN; j++) {
        uint n = n0 + tn + j * (BN / TN);
        [[unroll]] for (uint i = 0; i < TM; i++) {
            uint m = m0 + tm + i * (BM / TM);
            if (m < p.M && n < p.N) {
                uint yi = p.y_off + n * p.ldy + m;
                y[yi] = p.acc != 0 ? y[yi] + acc[i][j] : acc[i][j];
            }
        }
    }
}
