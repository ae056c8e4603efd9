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

#define FA_THREADS 128
#define FA_BR 64  // query rows per forward block (16 per warp)
#define FA_BC 64  // keys per tile (forward), keys per backward block (16 per warp)
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

__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
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

// Rows [0, rows) of a (rows, D) tile from global memory into shared memory (row stride
// D + 8); rows in [valid, rows) are zero.
template <int D>
__device__ __forceinline__ void load_tile(h16* sm, const h16* g, int rows, i64 valid) {
    const int CH = D / 8;
    for (int i = threadIdx.x; i < rows * CH; i += FA_THREADS) {
        int r = i / CH, k = i % CH;
        uint4 v;
        v.x = v.y = v.z = v.w = 0u;
        if (r < valid) v = *(const uint4*)(g + (i64)r * D + k * 8);
        *(uint4*)(sm + r * (D + 8) + k * 8) = v;
    }
}

// Asynchronous copies (cp.async): 16 bytes from global to shared memory without passing
// through registers, so the next tile loads while this one is computed. `valid` false writes
// zeros (no bytes are read).
__device__ __forceinline__ void cp16(h16* sm, const h16* g, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(sm)), "l"(g),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// load_tile, asynchronously: completes at a later cp_wait.
template <int D>
__device__ __forceinline__ void load_tile_async(h16* sm, const h16* g, i64 ld, int rows,
                                                i64 valid) {
    const int CH = D / 8;
    for (int i = threadIdx.x; i < rows * CH; i += FA_THREADS) {
        int r = i / CH, k = i % CH;
        bool ok = r < valid;
        cp16(sm + r * (D + 8) + k * 8, ok ? g + (i64)r * ld + k * 8 : g, ok);
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
// Forward: one block per (64 query rows, slice). o_saved (may be null) gets a second copy of
// the output, for the backward's rowsum(dO * O).
template <typename T, int D>
__device__ void flash_fwd_impl(Strided sq, Strided sk, Strided sv, Strided so, Strided ss,
                               float* lse, i64 heads, i64 t, i64 s, float scale_log2,
                               int causal) {
    extern __shared__ __align__(16) unsigned char fa_smem[];
    const int TILE = FA_BC * (D + 8);
    h16* Qs = (h16*)fa_smem;  // FA_BR x (D + 8), then two (K, V) tile pairs
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const i64 n = blockIdx.y, q0 = (i64)blockIdx.x * FA_BR;
    const h16* kg = slice<const h16>(sk, n, heads);
    const h16* vg = slice<const h16>(sv, n, heads);
    const h16* qg = slice<const h16>(sq, n, heads) + q0 * sq.st;

    load_tile_async<D>(Qs, qg, sq.st, FA_BR, t - q0);
    load_tile_async<D>(Qs + TILE, kg, sk.st, FA_BC, s);
    load_tile_async<D>(Qs + 2 * TILE, vg, sv.st, FA_BC, s);
    cp_commit();

    float acc[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};
    const i64 row0 = q0 + warp * 16 + g;  // this thread's rows: row0 and row0 + 8

    i64 tiles = (s + FA_BC - 1) / FA_BC;
    if (causal) {
        i64 last = q0 + FA_BR - 1 < t - 1 ? q0 + FA_BR - 1 : t - 1;
        if (last / FA_BC + 1 < tiles) tiles = last / FA_BC + 1;
    }
    u32 qf[D / 16][4];
    for (i64 jt = 0; jt < tiles; ++jt) {
        const i64 k0 = jt * FA_BC;
        h16* Ks = Qs + (1 + 2 * (jt & 1)) * TILE;
        h16* Vs = Ks + TILE;
        // Tile jt + 1 loads into the other pair while this one is computed.
        if (jt + 1 < tiles) {
            h16* Kn = Qs + (1 + 2 * ((jt + 1) & 1)) * TILE;
            load_tile_async<D>(Kn, kg + (k0 + FA_BC) * sk.st, sk.st, FA_BC, s - k0 - FA_BC);
            load_tile_async<D>(Kn + TILE, vg + (k0 + FA_BC) * sv.st, sv.st, FA_BC,
                               s - k0 - FA_BC);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        if (jt == 0) {
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) frag_a<D>(qf[kk], Qs, warp * 16, kk * 16);
        }

        float sc[FA_BC / 8][4];
#pragma unroll
        for (int j = 0; j < FA_BC / 8; ++j) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
            for (int np = 0; np < FA_BC / 16; ++np) {
                u32 b[4];
                frag_bt<D + 8>(b, Ks, np * 16, kk * 16);
                Mma<T>::mma(sc[2 * np], qf[kk], b[0], b[1]);
                Mma<T>::mma(sc[2 * np + 1], qf[kk], b[2], b[3]);
            }
        }
        // Scale into log2 units, mask, and fold the tile into the running softmax.
        const bool edge = (k0 + FA_BC > s) || (causal && k0 + FA_BC - 1 > q0);
        float mx[2] = {mrow[0], mrow[1]};
#pragma unroll
        for (int j = 0; j < FA_BC / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float x = sc[j][e] * scale_log2;
                if (edge) {
                    i64 key = k0 + j * 8 + 2 * c + (e & 1);
                    i64 row = row0 + 8 * (e >> 1);
                    if (key >= s || (causal && key > row)) x = -INFINITY;
                }
                sc[j][e] = x;
                mx[e >> 1] = fmaxf(mx[e >> 1], x);
            }
        }
        float base[2], alpha[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            base[r] = mx[r] == -INFINITY ? 0.f : mx[r];
            alpha[r] = exp2f(mrow[r] - base[r]);
            mrow[r] = mx[r];
            lrow[r] *= alpha[r];
        }
#pragma unroll
        for (int j = 0; j < FA_BC / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float p = exp2f(sc[j][e] - base[e >> 1]);
                sc[j][e] = p;
                lrow[e >> 1] += p;
            }
        }
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
            acc[j][0] *= alpha[0];
            acc[j][1] *= alpha[0];
            acc[j][2] *= alpha[1];
            acc[j][3] *= alpha[1];
        }
        // acc += P V, P straight from the score registers.
#pragma unroll
        for (int kk = 0; kk < FA_BC / 16; ++kk) {
            u32 a[4];
            a[0] = Mma<T>::pack(sc[2 * kk][0], sc[2 * kk][1]);
            a[1] = Mma<T>::pack(sc[2 * kk][2], sc[2 * kk][3]);
            a[2] = Mma<T>::pack(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
            a[3] = Mma<T>::pack(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                u32 b[4];
                frag_b<D + 8>(b, Vs, kk * 16, dp * 16);
                Mma<T>::mma(acc[2 * dp], a, b[0], b[1]);
                Mma<T>::mma(acc[2 * dp + 1], a, b[2], b[3]);
            }
        }
        // Every warp is done with this pair before the next iteration refills it.
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float l = lrow[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const i64 row = row0 + 8 * r;
        if (row >= t) continue;
        const float inv = 1.f / l;
        u32* orow = (u32*)(slice<h16>(so, n, heads) + row * so.st);
        u32* srow = ss.ptr ? (u32*)(slice<h16>(ss, n, heads) + row * ss.st) : 0;
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
            u32 w = Mma<T>::pack(acc[j][2 * r] * inv, acc[j][2 * r + 1] * inv);
            orow[(j * 8 + 2 * c) / 2] = w;
            if (srow) srow[(j * 8 + 2 * c) / 2] = w;
        }
        if (c == 0) lse[n * t + row] = (mrow[r] + log2f(l)) * LN2;
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

// Backward, step 2: one block per (64 keys, slice) walks the query tiles of BQ rows that see
// its keys: dV += Pᵀ dO, dK += scale · dSᵀ Q in registers, and dQ += scale · dS K into the
// f32 accumulator `dq` with atomics (dS goes through shared memory for that product).
template <typename T, int D, int BQ>
__device__ void flash_bwd_impl(Strided sq, Strided sk, Strided sv, Strided sg, Strided sdq,
                               Strided sdk, Strided sdv, const float* lse, const float* delta,
                               i64 heads, i64 t, i64 s, float scale, int causal) {
    extern __shared__ __align__(16) unsigned char fa_smem[];
    h16* Ks = (h16*)fa_smem;            // FA_BC x (D + 8)
    h16* Vs = Ks + FA_BC * (D + 8);     // FA_BC x (D + 8)
    h16* Q0 = Vs + FA_BC * (D + 8);     // two (q, dO) tile pairs, BQ x (D + 8) each
    h16* Ss = Q0 + 4 * BQ * (D + 8);    // FA_BC x (BQ + 8): dSᵀ, keys by queries
    float* L0 = (float*)(Ss + FA_BC * (BQ + 8));  // two BQ: logsumexp in log2 units
    float* D0 = L0 + 2 * BQ;                        // two BQ: delta
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const i64 n = blockIdx.y, k0 = (i64)blockIdx.x * FA_BC;
    const float scale_log2 = scale * LOG2E;

    const h16* qsl = slice<const h16>(sq, n, heads);
    const h16* gsl = slice<const h16>(sg, n, heads);
    load_tile_async<D>(Ks, slice<const h16>(sk, n, heads) + k0 * sk.st, sk.st, FA_BC, s - k0);
    load_tile_async<D>(Vs, slice<const h16>(sv, n, heads) + k0 * sv.st, sv.st, FA_BC, s - k0);

    float dka[D / 8][4], dva[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
        dka[j][0] = dka[j][1] = dka[j][2] = dka[j][3] = 0.f;
        dva[j][0] = dva[j][1] = dva[j][2] = dva[j][3] = 0.f;
    }
    const i64 key0 = k0 + warp * 16 + g;  // this thread's keys: key0 and key0 + 8
    // dQ's product is split over the warps: QG groups of 16 queries by CS column slices.
    const int QG = BQ / 16, CS = 4 / QG, NT = D / 8 / CS;
    const int qg = warp % QG, cs = warp / QG;

    const i64 first = causal ? k0 / BQ : 0;
    const i64 qtiles = (t + BQ - 1) / BQ;
    if (first < qtiles) {
        load_tile_async<D>(Q0, qsl + first * BQ * sq.st, sq.st, BQ, t - first * BQ);
        load_tile_async<D>(Q0 + BQ * (D + 8), gsl + first * BQ * sg.st, sg.st, BQ,
                           t - first * BQ);
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
            load_tile_async<D>(Qn, qsl + (q0 + BQ) * sq.st, sq.st, BQ, t - q0 - BQ);
            load_tile_async<D>(Qn + BQ * (D + 8), gsl + (q0 + BQ) * sg.st, sg.st, BQ,
                               t - q0 - BQ);
            cp_commit();
        }
        for (int i = threadIdx.x; i < BQ; i += FA_THREADS) {
            bool ok = q0 + i < t;
            Ls[i] = ok ? lse[n * t + q0 + i] * LOG2E : INFINITY;
            Ds[i] = ok ? delta[n * t + q0 + i] : 0.f;
        }
        if (it + 1 < qtiles) {
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();

        // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ for this warp's 16 keys.
        float st[BQ / 8][4], dpt[BQ / 8][4];
#pragma unroll
        for (int j = 0; j < BQ / 8; ++j) {
            st[j][0] = st[j][1] = st[j][2] = st[j][3] = 0.f;
            dpt[j][0] = dpt[j][1] = dpt[j][2] = dpt[j][3] = 0.f;
        }
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            u32 ak[4], av[4];
            frag_a<D>(ak, Ks, warp * 16, kk * 16);
            frag_a<D>(av, Vs, warp * 16, kk * 16);
#pragma unroll
            for (int np = 0; np < BQ / 16; ++np) {
                u32 b[4];
                frag_bt<D + 8>(b, Qs, np * 16, kk * 16);
                Mma<T>::mma(st[2 * np], ak, b[0], b[1]);
                Mma<T>::mma(st[2 * np + 1], ak, b[2], b[3]);
                frag_bt<D + 8>(b, Gs, np * 16, kk * 16);
                Mma<T>::mma(dpt[2 * np], av, b[0], b[1]);
                Mma<T>::mma(dpt[2 * np + 1], av, b[2], b[3]);
            }
        }
        // Pᵀ from the saved logsumexp; dSᵀ = Pᵀ (dPᵀ - delta).
#pragma unroll
        for (int j = 0; j < BQ / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int qi = j * 8 + 2 * c + (e & 1);
                i64 key = key0 + 8 * (e >> 1);
                float p = exp2f(st[j][e] * scale_log2 - Ls[qi]);
                if (key >= s || (causal && key > q0 + qi)) p = 0.f;
                st[j][e] = p;
                dpt[j][e] = p * (dpt[j][e] - Ds[qi]);
            }
        }
        // dV += Pᵀ dO and dK += dSᵀ Q (scaled at the end).
#pragma unroll
        for (int kk = 0; kk < BQ / 16; ++kk) {
            u32 ap[4], as[4];
            ap[0] = Mma<T>::pack(st[2 * kk][0], st[2 * kk][1]);
            ap[1] = Mma<T>::pack(st[2 * kk][2], st[2 * kk][3]);
            ap[2] = Mma<T>::pack(st[2 * kk + 1][0], st[2 * kk + 1][1]);
            ap[3] = Mma<T>::pack(st[2 * kk + 1][2], st[2 * kk + 1][3]);
            as[0] = Mma<T>::pack(dpt[2 * kk][0], dpt[2 * kk][1]);
            as[1] = Mma<T>::pack(dpt[2 * kk][2], dpt[2 * kk][3]);
            as[2] = Mma<T>::pack(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
            as[3] = Mma<T>::pack(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
            // dSᵀ to shared memory for dQ: rows key, cols query.
            u32* s0 = (u32*)(Ss + (warp * 16 + g) * (BQ + 8) + kk * 16 + 2 * c);
            u32* s1 = (u32*)(Ss + (warp * 16 + g + 8) * (BQ + 8) + kk * 16 + 2 * c);
            s0[0] = as[0];
            s1[0] = as[1];
            s0[4] = as[2];
            s1[4] = as[3];
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                u32 b[4];
                frag_b<D + 8>(b, Gs, kk * 16, dp * 16);
                Mma<T>::mma(dva[2 * dp], ap, b[0], b[1]);
                Mma<T>::mma(dva[2 * dp + 1], ap, b[2], b[3]);
                frag_b<D + 8>(b, Qs, kk * 16, dp * 16);
                Mma<T>::mma(dka[2 * dp], as, b[0], b[1]);
                Mma<T>::mma(dka[2 * dp + 1], as, b[2], b[3]);
            }
        }
        __syncthreads();
        // dQ[q0 + qg*16 .., cs slice] += scale · dS K (A = dS from dSᵀ, transposed on load).
        float qa[NT][4];
#pragma unroll
        for (int j = 0; j < NT; ++j) qa[j][0] = qa[j][1] = qa[j][2] = qa[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < FA_BC / 16; ++kk) {
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
            for (int j = 0; j < NT; ++j) {
                atomicAdd(dst + j * 8, qa[j][2 * r] * scale);
                atomicAdd(dst + j * 8 + 1, qa[j][2 * r + 1] * scale);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        i64 key = key0 + 8 * r;
        if (key >= s) continue;
        u32* krow = (u32*)(slice<h16>(sdk, n, heads) + key * sdk.st);
        u32* vrow = (u32*)(slice<h16>(sdv, n, heads) + key * sdv.st);
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
            krow[(j * 8 + 2 * c) / 2] = Mma<T>::pack(dka[j][2 * r] * scale, dka[j][2 * r + 1] * scale);
            vrow[(j * 8 + 2 * c) / 2] = Mma<T>::pack(dva[j][2 * r], dva[j][2 * r + 1]);
        }
    }
}

// Backward, step 3: the f32 dQ accumulator to the operands' dtype.
template <typename T>
__device__ void flash_dq_impl(const float* acc, T* out, i64 n) {
    GRID_STRIDE(i, n) { out[i] = Num<T>::st(acc[i]); }
}

// Backward blocks per SM the register budget is set for.
#define BWD_BLOCKS_64 3
#define BWD_BLOCKS_128 1
#define FLASH_KERNELS(S, T, D, BQ)                                                              \
    extern "C" __global__ void __launch_bounds__(FA_THREADS)                                   \
        flash_fwd_##S##_##D(Strided q, Strided k, Strided v, Strided o, Strided os,            \
                            float* lse, i64 heads, i64 t, i64 s, float sl2, int causal) {      \
        flash_fwd_impl<T, D>(q, k, v, o, os, lse, heads, t, s, sl2, causal);                   \
    }                                                                                          \
    extern "C" __global__ void flash_delta_##S##_##D(Strided o, Strided g, float* dl,          \
                                                     i64 heads, i64 t, i64 rows) {             \
        flash_delta_impl<T, D>(o, g, dl, heads, t, rows);                                      \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(FA_THREADS, BWD_BLOCKS_##D)                   \
        flash_bwd_##S##_##D(Strided q, Strided k, Strided v, Strided g, Strided dq,            \
                            Strided dk, Strided dv, const float* lse, const float* dl,         \
                            i64 heads, i64 t, i64 s, float scale, int causal) {                \
        flash_bwd_impl<T, D, BQ>(q, k, v, g, dq, dk, dv, lse, dl, heads, t, s, scale, causal); \
    }

FLASH_KERNELS(bf16, bf16, 64, 32)
FLASH_KERNELS(bf16, bf16, 128, 32)
FLASH_KERNELS(f16, f16, 64, 32)
FLASH_KERNELS(f16, f16, 128, 32)

extern "C" __global__ void flash_dq_bf16(const float* acc, bf16* out, i64 n) { flash_dq_impl<bf16>(acc, out, n); }
extern "C" __global__ void flash_dq_f16(const float* acc, f16* out, i64 n) { flash_dq_impl<f16>(acc, out, n); }
