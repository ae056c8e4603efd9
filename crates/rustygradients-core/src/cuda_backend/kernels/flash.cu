// FlashAttention (tiled, O(T) memory) for f16/bf16 q, k, v of head dim 64 or 128, with f32
// accumulation on the tensor cores (mma.sync m16n8k16). Operands are contiguous (n, t, d)
// slices. The forward keeps each row's logsumexp (natural log, f32) and never forms the
// (t, s) score matrix; the backward recomputes the probabilities tile by tile from it.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, c = lane % 4):
//   A (16x16, row-major): a0 = A[g][2c..2c+1], a1 = A[g+8][2c..], a2 = A[g][2c+8..], a3 = A[g+8][2c+8..]
//   B (16x8, k-major):    b0 = B[2c..2c+1][g], b1 = B[2c+8..2c+9][g]
//   C (16x8, f32):        c0,c1 = C[g][2c..2c+1], c2,c3 = C[g+8][2c..2c+1]
// Tiles live in shared memory with rows padded by 8 elements (16 bytes), so the eight row
// addresses of one ldmatrix fall in different banks.

#define FA_BC 64  // keys per forward tile
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

typedef unsigned short h16;

// Where slice n's rows of one operand live: slice n is (batch n / heads, head n % heads), its
// row r starts at ptr + batch·sb + head·sh + r·st (elements), and a row's D elements are
// consecutive. Heads taken as views of a fused qkv projection read in place this way, and
// outputs are written (batch, time, head, dim)-major, so no transposing copy is needed on
// either side.
struct Strided {
    u64 ptr;
    i64 sb, sh, st;
};
template <typename P> __device__ __forceinline__ P* slice(const Strided& x, i64 n, i64 heads) {
    return (P*)x.ptr + (n / heads) * x.sb + (n % heads) * x.sh;
}

template <typename T> struct Mma;
template <> struct Mma<bf16> {
    __device__ static __forceinline__ void mma(float* c, const u32* a, u32 b0, u32 b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    // Two floats as one register: `lo` in the low half (the lower column).
    __device__ static __forceinline__ u32 pack(float lo, float hi) {
        u32 r;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    __device__ static __forceinline__ float ld(h16 x) { return __uint_as_float(((u32)x) << 16); }
};
template <> struct Mma<f16> {
    __device__ static __forceinline__ void mma(float* c, const u32* a, u32 b0, u32 b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    __device__ static __forceinline__ u32 pack(float lo, float hi) {
        u32 r;
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    __device__ static __forceinline__ float ld(h16 x) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
        return f;
    }
};

// The intrinsic (not inline cvta) lets the compiler fold tile offsets into the address.
__device__ __forceinline__ u32 smem_addr(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

// Four 8x8 matrices of 16-bit values; lanes 8m..8m+7 give the row addresses of matrix m.
__device__ __forceinline__ void ldsm4(u32* r, const h16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
// The same, each matrix transposed on the way.
__device__ __forceinline__ void ldsm4t(u32* r, const h16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// Asynchronous copies (cp.async): 16 bytes from global to shared memory without passing
// through registers, so the next tile loads while this one is computed. `valid` false writes
// zeros (no bytes are read).
__device__ __forceinline__ void cp16(u32 sm, const h16* g, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(sm), "l"(g),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// dst[0..2] += (a, b) in one 8-byte reduction (dst 8-byte aligned).
__device__ __forceinline__ void red_add2(float* dst, float a, float b) {
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" ::"l"(dst), "f"(a), "f"(b) : "memory");
}

// Rows [0, rows) of a (rows, D) tile (global rows `ld` apart) into shared memory (row stride
// D + 8), asynchronously: completes at a later cp_wait. Rows in [valid, rows) are zero.
template <int D, int NTH, int ROWS>
__device__ __forceinline__ void load_tile_async(h16* sm, const h16* g, i64 ld, i64 valid) {
    // Each thread copies one 16-byte column chunk of every RPI-th row (fixed trip count:
    // blocks have exactly NTH threads), with 32-bit row bounds.
    constexpr int CH = D / 8, RPI = NTH / CH;
    static_assert(NTH % CH == 0 && ROWS % RPI == 0, "tile split");
    const int r0 = threadIdx.x / CH, k = threadIdx.x % CH;
    const int v = (int)(valid < ROWS ? valid : ROWS) - r0;
    const h16* src = g + r0 * ld + k * 8;
    const u32 dst = smem_addr(sm + r0 * (D + 8) + k * 8);
#pragma unroll
    for (int it = 0; it < ROWS / RPI; ++it) {
        const bool ok = it * RPI < v;
        cp16(dst + it * RPI * (D + 8) * 2, ok ? src + it * RPI * ld : g, ok);
    }
}

// The A fragments of rows [r0, r0 + 16) x cols [k0, k0 + 16) of a row-major shared tile.
template <int D>
__device__ __forceinline__ void frag_a(u32* a, const h16* sm, int r0, int k0) {
    int lane = threadIdx.x & 31, m = lane >> 3;
    ldsm4(a, sm + (r0 + (m & 1) * 8 + (lane & 7)) * (D + 8) + k0 + (m >> 1) * 8);
}

// B fragments for two n-tiles from a shared tile whose rows are the n index (B = tileᵀ):
// rows [n0, n0 + 16), cols [k0, k0 + 16). b[0..1] for rows n0..n0+7, b[2..3] for n0+8..n0+15.
template <int STRIDE>
__device__ __forceinline__ void frag_bt(u32* b, const h16* sm, int n0, int k0) {
    int lane = threadIdx.x & 31, m = lane >> 3;
    ldsm4(b, sm + (n0 + (m >> 1) * 8 + (lane & 7)) * STRIDE + k0 + (m & 1) * 8);
}

// B fragments for two n-tiles from a shared tile whose rows are the k index (B = tile):
// rows [k0, k0 + 16), cols [n0, n0 + 16). b[0..1] for cols n0..n0+7, b[2..3] for n0+8..n0+15.
template <int STRIDE>
__device__ __forceinline__ void frag_b(u32* b, const h16* sm, int k0, int n0) {
    int lane = threadIdx.x & 31, m = lane >> 3;
    ldsm4t(b, sm + (k0 + (m & 1) * 8 + (lane & 7)) * STRIDE + n0 + (m >> 1) * 8);
}

// ---------------------------------------------------------------------------------------------
// Forward: one block of W warps per (BR = 16·W·MT query rows, slice). Warp w owns the MT
// 16-row tiles starting at rows (w·MT + i)·16, so every K and V fragment it reads from shared
// memory feeds MT products. o_saved (may be null) gets a second copy of the output, for the
// backward's rowsum(dO * O). The query fragments stay in registers when they fit (QREG).
template <typename T, int D, int W, int MT>
__device__ void flash_fwd_impl(Strided sq, Strided sk, Strided sv, Strided so, Strided ss,
                               float* lse, i64 heads, i64 t, i64 s, float scale_log2,
                               int causal) {
    constexpr int NTH = 32 * W, BR = 16 * W * MT;
    constexpr bool QREG = MT * D <= 128;
    extern __shared__ __align__(16) unsigned char fa_smem[];
    const int TILE = FA_BC * (D + 8);
    h16* Qs = (h16*)fa_smem;           // BR x (D + 8)
    h16* KV = Qs + BR * (D + 8);       // two (K, V) tile pairs
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const i64 n = blockIdx.y, q0 = (i64)blockIdx.x * BR;
    const h16* kg = slice<const h16>(sk, n, heads);
    const h16* vg = slice<const h16>(sv, n, heads);
    const h16* qg = slice<const h16>(sq, n, heads) + q0 * sq.st;

    load_tile_async<D, NTH, BR>(Qs, qg, sq.st, t - q0);
    load_tile_async<D, NTH, FA_BC>(KV, kg, sk.st, s);
    load_tile_async<D, NTH, FA_BC>(KV + TILE, vg, sv.st, s);
    cp_commit();

    float acc[MT][D / 8][4];
    float mrow[MT][2], lrow[MT][2];
#pragma unroll
    for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int j = 0; j < D / 8; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;
        mrow[i][0] = mrow[i][1] = -INFINITY;
        lrow[i][0] = lrow[i][1] = 0.f;
    }
    const int wr = warp * MT * 16;  // the warp's first row in the block
    // This thread's rows: q0 + wr + 16 i + g and that + 8.

    i64 tiles = (s + FA_BC - 1) / FA_BC;
    if (causal) {
        i64 last = q0 + BR - 1 < t - 1 ? q0 + BR - 1 : t - 1;
        if (last / FA_BC + 1 < tiles) tiles = last / FA_BC + 1;
    }
    u32 qf[QREG ? MT : 1][QREG ? D / 16 : 1][4];
    for (i64 jt = 0; jt < tiles; ++jt) {
        const i64 k0 = jt * FA_BC;
        h16* Ks = KV + 2 * (jt & 1) * TILE;
        h16* Vs = Ks + TILE;
        // Tile jt + 1 loads into the other pair while this one is computed.
        if (jt + 1 < tiles) {
            h16* Kn = KV + 2 * ((jt + 1) & 1) * TILE;
            load_tile_async<D, NTH, FA_BC>(Kn, kg + (k0 + FA_BC) * sk.st, sk.st, s - k0 - FA_BC);
            load_tile_async<D, NTH, FA_BC>(Kn + TILE, vg + (k0 + FA_BC) * sv.st, sv.st, s - k0 - FA_BC);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        if constexpr (QREG) {
            if (jt == 0) {
#pragma unroll
                for (int i = 0; i < MT; ++i)
#pragma unroll
                    for (int kk = 0; kk < D / 16; ++kk) frag_a<D>(qf[i][kk], Qs, wr + 16 * i, kk * 16);
            }
        }
        // Under a causal mask, a warp whose rows all precede this tile's first key adds nothing.
        if (!causal || k0 <= q0 + wr + MT * 16 - 1) {
            float sc[MT][FA_BC / 8][4];
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < FA_BC / 8; ++j) sc[i][j][0] = sc[i][j][1] = sc[i][j][2] = sc[i][j][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                u32 qt[QREG ? 1 : MT][4];
                if constexpr (!QREG) {
#pragma unroll
                    for (int i = 0; i < MT; ++i) frag_a<D>(qt[i], Qs, wr + 16 * i, kk * 16);
                }
#pragma unroll
                for (int np = 0; np < FA_BC / 16; ++np) {
                    u32 b[4];
                    frag_bt<D + 8>(b, Ks, np * 16, kk * 16);
#pragma unroll
                    for (int i = 0; i < MT; ++i) {
                        const u32* a;
                        if constexpr (QREG) a = qf[i][kk];
                        else a = qt[i];
                        Mma<T>::mma(sc[i][2 * np], a, b[0], b[1]);
                        Mma<T>::mma(sc[i][2 * np + 1], a, b[2], b[3]);
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                // Mask, take the tile's maximum of the raw scores, and fold the tile into the
                // running softmax (kept in log2 units: m = max · scale_log2, so that each
                // probability is one FFMA and one ex2; scale_log2 > 0, see flash.rs).
                const int rfirst = (int)(q0 + wr + 16 * i);  // the m-tile's first row
                const bool edge = (k0 + FA_BC > s) || (causal && k0 + FA_BC - 1 > rfirst);
                float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
                for (int j = 0; j < FA_BC / 8; ++j) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        if (edge) {
                            const int key = (int)k0 + j * 8 + 2 * c + (e & 1);
                            const int row = rfirst + g + 8 * (e >> 1);
                            if (key >= (int)s || (causal && key > row)) sc[i][j][e] = -INFINITY;
                        }
                        mx[e >> 1] = fmaxf(mx[e >> 1], sc[i][j][e]);
                    }
                }
                float nb[2], alpha[2];
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                    const float m = fmaxf(mrow[i][r], mx[r] * scale_log2);
                    const float base = m == -INFINITY ? 0.f : m;
                    alpha[r] = ex2(mrow[i][r] - base);
                    mrow[i][r] = m;
                    lrow[i][r] *= alpha[r];
                    nb[r] = -base;
                }
#pragma unroll
                for (int j = 0; j < FA_BC / 8; ++j) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        float p = ex2(fmaf(sc[i][j][e], scale_log2, nb[e >> 1]));
                        sc[i][j][e] = p;
                        lrow[i][e >> 1] += p;
                    }
                }
#pragma unroll
                for (int j = 0; j < D / 8; ++j) {
                    acc[i][j][0] *= alpha[0];
                    acc[i][j][1] *= alpha[0];
                    acc[i][j][2] *= alpha[1];
                    acc[i][j][3] *= alpha[1];
                }
            }
            // acc += P V, P straight from the score registers.
#pragma unroll
            for (int kk = 0; kk < FA_BC / 16; ++kk) {
                u32 a[MT][4];
#pragma unroll
                for (int i = 0; i < MT; ++i) {
                    a[i][0] = Mma<T>::pack(sc[i][2 * kk][0], sc[i][2 * kk][1]);
                    a[i][1] = Mma<T>::pack(sc[i][2 * kk][2], sc[i][2 * kk][3]);
                    a[i][2] = Mma<T>::pack(sc[i][2 * kk + 1][0], sc[i][2 * kk + 1][1]);
                    a[i][3] = Mma<T>::pack(sc[i][2 * kk + 1][2], sc[i][2 * kk + 1][3]);
                }
#pragma unroll
                for (int dp = 0; dp < D / 16; ++dp) {
                    u32 b[4];
                    frag_b<D + 8>(b, Vs, kk * 16, dp * 16);
#pragma unroll
                    for (int i = 0; i < MT; ++i) {
                        Mma<T>::mma(acc[i][2 * dp], a[i], b[0], b[1]);
                        Mma<T>::mma(acc[i][2 * dp + 1], a[i], b[2], b[3]);
                    }
                }
            }
        }
        // Every warp is done with this pair before the next iteration refills it.
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float l = lrow[i][r];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const i64 row = q0 + wr + 16 * i + g + 8 * r;
            if (row >= t) continue;
            const float inv = 1.f / l;
            u32* orow = (u32*)(slice<h16>(so, n, heads) + row * so.st);
            u32* srow = ss.ptr ? (u32*)(slice<h16>(ss, n, heads) + row * ss.st) : 0;
#pragma unroll
            for (int j = 0; j < D / 8; ++j) {
                u32 w = Mma<T>::pack(acc[i][j][2 * r] * inv, acc[i][j][2 * r + 1] * inv);
                orow[(j * 8 + 2 * c) / 2] = w;
                if (srow) srow[(j * 8 + 2 * c) / 2] = w;
            }
            if (c == 0) lse[n * t + row] = (mrow[i][r] + log2f(l)) * LN2;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward, step 1: delta[row] = sum_d dO[row, d] * O[row, d] (one warp per row).
template <typename T, int D>
__device__ void flash_delta_impl(Strided so, Strided sg, float* delta, i64 heads, i64 t,
                                 i64 rows) {
    i64 row = (i64)blockIdx.x * 4 + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const h16* o = slice<const h16>(so, row / t, heads) + (row % t) * so.st;
    const h16* go = slice<const h16>(sg, row / t, heads) + (row % t) * sg.st;
    float sum = 0.f;
    for (int d = lane; d < D; d += 32) sum += Mma<T>::ld(o[d]) * Mma<T>::ld(go[d]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) delta[row] = sum;
}

// Backward, step 2: one block of W warps per (BK = 16·W·MK keys, slice) walks the query tiles
// of BQ rows that see its keys. Warp w owns the MK 16-key tiles starting at (w·MK + i)·16:
// dV += Pᵀ dO and dK += scale · dSᵀ Q in registers, each Q and dO fragment feeding MK
// products. dQ += scale · dS K goes into the f32 accumulator `dq` with atomics (dS through
// shared memory for that product, split over the warps as QG groups of 16 queries by CS
// column slices).
template <typename T, int D, int W, int MK, int BQ>
__device__ void flash_bwd_impl(Strided sq, Strided sk, Strided sv, Strided sg, Strided sdq,
                               Strided sdk, Strided sdv, const float* lse, const float* delta,
                               i64 heads, i64 t, i64 s, float scale, int causal) {
    constexpr int NTH = 32 * W, BK = 16 * W * MK;
    constexpr int QG = BQ / 16, CS = W / QG, NT = D / 8 / CS;
    static_assert(W % QG == 0 && NT % 2 == 0, "dQ split");
    extern __shared__ __align__(16) unsigned char fa_smem[];
    h16* Ks = (h16*)fa_smem;            // BK x (D + 8)
    h16* Vs = Ks + BK * (D + 8);        // BK x (D + 8)
    h16* Q0 = Vs + BK * (D + 8);        // two (q, dO) tile pairs, BQ x (D + 8) each
    h16* Ss = Q0 + 4 * BQ * (D + 8);    // BK x (BQ + 8): dSᵀ, keys by queries
    float* L0 = (float*)(Ss + BK * (BQ + 8));  // two BQ: -logsumexp in log2 units
    float* D0 = L0 + 2 * BQ;                     // two BQ: delta
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const i64 n = blockIdx.y, k0 = (i64)blockIdx.x * BK;
    const float scale_log2 = scale * LOG2E;
    const int wk = warp * MK * 16;  // the warp's first key in the block

    const h16* qsl = slice<const h16>(sq, n, heads);
    const h16* gsl = slice<const h16>(sg, n, heads);
    load_tile_async<D, NTH, BK>(Ks, slice<const h16>(sk, n, heads) + k0 * sk.st, sk.st, s - k0);
    load_tile_async<D, NTH, BK>(Vs, slice<const h16>(sv, n, heads) + k0 * sv.st, sv.st, s - k0);

    float dka[MK][D / 8][4], dva[MK][D / 8][4];
#pragma unroll
    for (int i = 0; i < MK; ++i)
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
            dka[i][j][0] = dka[i][j][1] = dka[i][j][2] = dka[i][j][3] = 0.f;
            dva[i][j][0] = dva[i][j][1] = dva[i][j][2] = dva[i][j][3] = 0.f;
        }
    const int qg = warp % QG, cs = warp / QG;

    const i64 first = causal ? k0 / BQ : 0;
    const i64 qtiles = (t + BQ - 1) / BQ;
    if (first < qtiles) {
        load_tile_async<D, NTH, BQ>(Q0, qsl + first * BQ * sq.st, sq.st, t - first * BQ);
        load_tile_async<D, NTH, BQ>(Q0 + BQ * (D + 8), gsl + first * BQ * sg.st, sg.st, t - first * BQ);
    }
    cp_commit();
    for (i64 it = first; it < qtiles; ++it) {
        const i64 q0 = it * BQ;
        const int buf = (int)((it - first) & 1);
        h16* Qs = Q0 + 2 * buf * BQ * (D + 8);
        h16* Gs = Qs + BQ * (D + 8);
        float* Ls = L0 + buf * BQ;
        float* Ds = D0 + buf * BQ;
        // The next (q, dO) tile loads into the other pair while this one is computed.
        if (it + 1 < qtiles) {
            h16* Qn = Q0 + 2 * (buf ^ 1) * BQ * (D + 8);
            load_tile_async<D, NTH, BQ>(Qn, qsl + (q0 + BQ) * sq.st, sq.st, t - q0 - BQ);
            load_tile_async<D, NTH, BQ>(Qn + BQ * (D + 8), gsl + (q0 + BQ) * sg.st, sg.st, t - q0 - BQ);
            cp_commit();
        }
        for (int i = threadIdx.x; i < BQ; i += NTH) {
            bool ok = q0 + i < t;
            Ls[i] = ok ? -lse[n * t + q0 + i] * LOG2E : -INFINITY;
            Ds[i] = ok ? delta[n * t + q0 + i] : 0.f;
        }
        if (it + 1 < qtiles) {
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();

        // Under a causal mask, a warp whose keys all follow this tile's last query adds
        // nothing (and the dQ product below skips its rows of dSᵀ).
        if (!causal || k0 + wk <= q0 + BQ - 1) {
            // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ for this warp's keys.
            float st[MK][BQ / 8][4], dpt[MK][BQ / 8][4];
#pragma unroll
            for (int i = 0; i < MK; ++i)
#pragma unroll
                for (int j = 0; j < BQ / 8; ++j) {
                    st[i][j][0] = st[i][j][1] = st[i][j][2] = st[i][j][3] = 0.f;
                    dpt[i][j][0] = dpt[i][j][1] = dpt[i][j][2] = dpt[i][j][3] = 0.f;
                }
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                u32 ak[MK][4], av[MK][4];
#pragma unroll
                for (int i = 0; i < MK; ++i) {
                    frag_a<D>(ak[i], Ks, wk + 16 * i, kk * 16);
                    frag_a<D>(av[i], Vs, wk + 16 * i, kk * 16);
                }
#pragma unroll
                for (int np = 0; np < BQ / 16; ++np) {
                    u32 b[4];
                    frag_bt<D + 8>(b, Qs, np * 16, kk * 16);
#pragma unroll
                    for (int i = 0; i < MK; ++i) {
                        Mma<T>::mma(st[i][2 * np], ak[i], b[0], b[1]);
                        Mma<T>::mma(st[i][2 * np + 1], ak[i], b[2], b[3]);
                    }
                    frag_bt<D + 8>(b, Gs, np * 16, kk * 16);
#pragma unroll
                    for (int i = 0; i < MK; ++i) {
                        Mma<T>::mma(dpt[i][2 * np], av[i], b[0], b[1]);
                        Mma<T>::mma(dpt[i][2 * np + 1], av[i], b[2], b[3]);
                    }
                }
            }
            // Pᵀ from the saved logsumexp; dSᵀ = Pᵀ (dPᵀ - delta).
#pragma unroll
            for (int i = 0; i < MK; ++i)
#pragma unroll
                for (int j = 0; j < BQ / 8; ++j) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int qi = j * 8 + 2 * c + (e & 1);
                        const int key = (int)(k0 - q0) + wk + 16 * i + g + 8 * (e >> 1);
                        float p = ex2(fmaf(st[i][j][e], scale_log2, Ls[qi]));
                        if (key >= (int)(s - q0) || (causal && key > qi)) p = 0.f;
                        st[i][j][e] = p;
                        dpt[i][j][e] = p * (dpt[i][j][e] - Ds[qi]);
                    }
                }
            // dV += Pᵀ dO and dK += dSᵀ Q (scaled at the end).
#pragma unroll
            for (int kk = 0; kk < BQ / 16; ++kk) {
                u32 ap[MK][4], as[MK][4];
#pragma unroll
                for (int i = 0; i < MK; ++i) {
                    ap[i][0] = Mma<T>::pack(st[i][2 * kk][0], st[i][2 * kk][1]);
                    ap[i][1] = Mma<T>::pack(st[i][2 * kk][2], st[i][2 * kk][3]);
                    ap[i][2] = Mma<T>::pack(st[i][2 * kk + 1][0], st[i][2 * kk + 1][1]);
                    ap[i][3] = Mma<T>::pack(st[i][2 * kk + 1][2], st[i][2 * kk + 1][3]);
                    as[i][0] = Mma<T>::pack(dpt[i][2 * kk][0], dpt[i][2 * kk][1]);
                    as[i][1] = Mma<T>::pack(dpt[i][2 * kk][2], dpt[i][2 * kk][3]);
                    as[i][2] = Mma<T>::pack(dpt[i][2 * kk + 1][0], dpt[i][2 * kk + 1][1]);
                    as[i][3] = Mma<T>::pack(dpt[i][2 * kk + 1][2], dpt[i][2 * kk + 1][3]);
                    // dSᵀ to shared memory for dQ: rows key, cols query.
                    u32* s0 = (u32*)(Ss + (wk + 16 * i + g) * (BQ + 8) + kk * 16 + 2 * c);
                    u32* s1 = (u32*)(Ss + (wk + 16 * i + g + 8) * (BQ + 8) + kk * 16 + 2 * c);
                    s0[0] = as[i][0];
                    s1[0] = as[i][1];
                    s0[4] = as[i][2];
                    s1[4] = as[i][3];
                }
#pragma unroll
                for (int dp = 0; dp < D / 16; ++dp) {
                    u32 b[4];
                    frag_b<D + 8>(b, Gs, kk * 16, dp * 16);
#pragma unroll
                    for (int i = 0; i < MK; ++i) {
                        Mma<T>::mma(dva[i][2 * dp], ap[i], b[0], b[1]);
                        Mma<T>::mma(dva[i][2 * dp + 1], ap[i], b[2], b[3]);
                    }
                    frag_b<D + 8>(b, Qs, kk * 16, dp * 16);
#pragma unroll
                    for (int i = 0; i < MK; ++i) {
                        Mma<T>::mma(dka[i][2 * dp], as[i], b[0], b[1]);
                        Mma<T>::mma(dka[i][2 * dp + 1], as[i], b[2], b[3]);
                    }
                }
            }
        }
        __syncthreads();
        // dQ[q0 + qg*16 .., cs slice] += scale · dS K (A = dS from dSᵀ, transposed on load).
        float qa[NT][4];
#pragma unroll
        for (int j = 0; j < NT; ++j) qa[j][0] = qa[j][1] = qa[j][2] = qa[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            // Causal: keys past this group's last query have dS = 0 (and may be unwritten).
            if (causal && k0 + kk * 16 > q0 + qg * 16 + 15) continue;
            u32 a[4];
            {
                int m = lane >> 3;
                ldsm4t(a, Ss + (kk * 16 + (m >> 1) * 8 + (lane & 7)) * (BQ + 8) + qg * 16 + (m & 1) * 8);
            }
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                u32 b[4];
                frag_b<D + 8>(b, Ks, kk * 16, cs * (D / CS) + np * 16);
                Mma<T>::mma(qa[2 * np], a, b[0], b[1]);
                Mma<T>::mma(qa[2 * np + 1], a, b[2], b[3]);
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            i64 row = q0 + qg * 16 + g + 8 * r;
            if (row >= t) continue;
            float* dst = slice<float>(sdq, n, heads) + row * sdq.st + cs * (D / CS) + 2 * c;
#pragma unroll
            for (int j = 0; j < NT; ++j) red_add2(dst + j * 8, qa[j][2 * r] * scale, qa[j][2 * r + 1] * scale);
        }
    }
#pragma unroll
    for (int i = 0; i < MK; ++i)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            i64 key = k0 + wk + 16 * i + g + 8 * r;
            if (key >= s) continue;
            u32* krow = (u32*)(slice<h16>(sdk, n, heads) + key * sdk.st);
            u32* vrow = (u32*)(slice<h16>(sdv, n, heads) + key * sdv.st);
#pragma unroll
            for (int j = 0; j < D / 8; ++j) {
                krow[(j * 8 + 2 * c) / 2] = Mma<T>::pack(dka[i][j][2 * r] * scale, dka[i][j][2 * r + 1] * scale);
                vrow[(j * 8 + 2 * c) / 2] = Mma<T>::pack(dva[i][j][2 * r], dva[i][j][2 * r + 1]);
            }
        }
}

// Backward, step 3: the f32 dQ accumulator to the operands' dtype.
template <typename T>
__device__ void flash_dq_impl(const float* acc, T* out, i64 n) {
    GRID_STRIDE(i, n) { out[i] = Num<T>::st(acc[i]); }
}

// Kernel names carry the tiling: flash_fwd_<dtype>_<D>_w<W>m<MT> and
// flash_bwd_<dtype>_<D>_w<W>k<MK>q<BQ> (`flash.rs` names the same).
#define FLASH_FWD(S, T, D, W, MT, MINB)                                                        \
    extern "C" __global__ void __launch_bounds__(32 * W, MINB)                                 \
        flash_fwd_##S##_##D##_w##W##m##MT(Strided q, Strided k, Strided v, Strided o,          \
                                          Strided os, float* lse, i64 heads, i64 t, i64 s,     \
                                          float sl2, int causal) {                             \
        flash_fwd_impl<T, D, W, MT>(q, k, v, o, os, lse, heads, t, s, sl2, causal);            \
    }
#define FLASH_BWD(S, T, D, W, MK, BQ, MINB)                                                    \
    extern "C" __global__ void __launch_bounds__(32 * W, MINB)                                 \
        flash_bwd_##S##_##D##_w##W##k##MK##q##BQ(                                             \
            Strided q, Strided k, Strided v, Strided g, Strided dq, Strided dk, Strided dv,    \
            const float* lse, const float* dl, i64 heads, i64 t, i64 s, float scale,           \
            int causal) {                                                                      \
        flash_bwd_impl<T, D, W, MK, BQ>(q, k, v, g, dq, dk, dv, lse, dl, heads, t, s, scale,   \
                                        causal);                                               \
    }
#define FLASH_DELTA(S, T, D)                                                                   \
    extern "C" __global__ void flash_delta_##S##_##D(Strided o, Strided g, float* dl,          \
                                                     i64 heads, i64 t, i64 rows) {             \
        flash_delta_impl<T, D>(o, g, dl, heads, t, rows);                                      \
    }
// The tilings `flash.rs` launches. Measured on an H200 (2026-11-27): forward w4m2 / w8m1 and
// backward w4k1q64 / w8k1q32 / w8k1q64 / w4k2q16 / w4k2q32 (and at head dim 128 w8k1q32 /
// w4k1q16) were all within -15%..+7% of these, so the smallest stay.
#define FLASH_KERNELS(S, T)                                                                    \
    FLASH_DELTA(S, T, 64)                                                                      \
    FLASH_DELTA(S, T, 128)                                                                     \
    FLASH_FWD(S, T, 64, 4, 1, 3)                                                                \
    FLASH_FWD(S, T, 128, 4, 1, 2)                                                                \
    FLASH_BWD(S, T, 64, 4, 1, 32, 3)                                                           \
    FLASH_BWD(S, T, 128, 4, 1, 32, 1)

FLASH_KERNELS(bf16, bf16)
FLASH_KERNELS(f16, f16)

extern "C" __global__ void flash_dq_bf16(const float* acc, bf16* out, i64 n) { flash_dq_impl<bf16>(acc, out, n); }
extern "C" __global__ void flash_dq_f16(const float* acc, f16* out, i64 n) { flash_dq_impl<f16>(acc, out, n); }
