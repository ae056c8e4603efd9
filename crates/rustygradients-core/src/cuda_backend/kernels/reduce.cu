// Reductions: one block per output element. The layout is permuted on the host so that the
// run reduced into output `o` is elements `o*r .. o*r + r` in row-major order. Results do not
// depend on timing: each block combines in a fixed order.

#define RBLOCK 256

// Float sums accumulate in f32 (f64 for f64); integer sums in wrapping 64-bit, written as i64.
template <typename T, typename A, typename O>
__device__ void sum_impl(const T* x, Lay l, i64 r, O* out, bool store_t) {
    i64 o = blockIdx.x;
    A acc = (A)0;
    for (i64 j = threadIdx.x; j < r; j += RBLOCK) acc += (A)Num<T>::ld(x[lay_off(l, o * r + j)]);
    acc = block_sum<A>(acc);
    if (threadIdx.x == 0) out[o] = (O)acc;
}
template <typename T>
__device__ void sum_float(const T* x, Lay l, i64 r, T* out) {
    typedef typename Num<T>::acc A;
    i64 o = blockIdx.x;
    A acc = (A)0;
    for (i64 j = threadIdx.x; j < r; j += RBLOCK) acc += Num<T>::ld(x[lay_off(l, o * r + j)]);
    acc = block_sum<A>(acc);
    if (threadIdx.x == 0) out[o] = Num<T>::st(acc);
}
template <typename T>
__device__ void sum_int(const T* x, Lay l, i64 r, i64* out) {
    i64 o = blockIdx.x;
    u64 acc = 0;
    for (i64 j = threadIdx.x; j < r; j += RBLOCK) acc += (u64)(i64)x[lay_off(l, o * r + j)];
    acc = block_sum<u64>(acc);
    if (threadIdx.x == 0) out[o] = (i64)acc;
}

// First stage of a sum over few, long runs: block b adds elements [c·chunk, (c+1)·chunk) of
// run o = b / chunks (c = b % chunks) into partial[b], in the accumulation type; a second
// launch of `sum_f32`/`sum_f64`/`sum_i64` adds each run's `chunks` partials.
template <typename T, typename A>
__device__ void sum_partial_impl(const T* x, Lay l, i64 r, i64 chunks, i64 chunk, A* partial) {
    i64 b = blockIdx.x, o = b / chunks, c = b % chunks;
    i64 end = (c + 1) * chunk < r ? (c + 1) * chunk : r;
    A acc = (A)0;
    for (i64 j = c * chunk + threadIdx.x; j < end; j += RBLOCK) {
        if constexpr (Num<T>::is_float) acc += Num<T>::ld(x[lay_off(l, o * r + j)]);
        else acc += (A)(u64)(i64)x[lay_off(l, o * r + j)];
    }
    acc = block_sum<A>(acc);
    if (threadIdx.x == 0) partial[b] = acc;
}

// Sums over the leading rows of a contiguous (rows, cols) tensor (a bias gradient): block
// (bx, by) covers columns bx*32 .. bx*32+31, a warp per 32 columns reading along rows so that
// loads are coalesced, rows by*8+ty stepping gridDim.y*8; partial[by*cols + c]. Then
// `col_final` adds each column's gridDim.y partials in order.
template <typename T>
__device__ void col_partial_impl(const T* x, i64 rows, i64 cols, typename Num<T>::acc* partial) {
    typedef typename Num<T>::acc A;
    __shared__ A sh[8][33];
    int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    i64 c = (i64)blockIdx.x * 32 + tx;
    A acc = (A)0;
    if (c < cols)
        for (i64 r = (i64)blockIdx.y * 8 + ty; r < rows; r += (i64)gridDim.y * 8)
            acc += Num<T>::ld(x[r * cols + c]);
    sh[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && c < cols) {
        A s = (A)0;
        for (int k = 0; k < 8; ++k) s += sh[k][tx];
        partial[(i64)blockIdx.y * cols + c] = s;
    }
}
template <typename T>
__device__ void col_final_impl(const typename Num<T>::acc* partial, i64 parts, i64 cols, T* out) {
    typedef typename Num<T>::acc A;
    GRID_STRIDE(c, cols) {
        A s = (A)0;
        for (i64 p = 0; p < parts; ++p) s += partial[p * cols + c];
        out[c] = Num<T>::st(s);
    }
}

// Max/min and their indices: NaN beats everything, then the better value, then the lower index
// (the CPU's rule: the first NaN, else the first extreme).
template <typename A> __device__ bool better(A a, i64 ia, A b, i64 ib, bool max) {
    bool an = a != a, bn = b != b;
    if (an || bn) return an && (!bn || ia < ib);
    if (a == b) return ia < ib;
    return max ? a > b : a < b;
}
template <typename T>
__device__ void extreme_impl(const T* x, Lay l, i64 r, bool max, T* out_v, i64* out_i) {
    typedef typename Num<T>::acc A;
    __shared__ A sv[RBLOCK];
    __shared__ i64 si[RBLOCK];
    i64 o = blockIdx.x;
    A best = Num<T>::ld(x[lay_off(l, o * r)]);
    i64 bi = 0;
    for (i64 j = threadIdx.x; j < r; j += RBLOCK) {
        A v = Num<T>::ld(x[lay_off(l, o * r + j)]);
        if (better<A>(v, j, best, bi, max)) { best = v; bi = j; }
    }
    sv[threadIdx.x] = best;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int s = RBLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            int t = threadIdx.x + s;
            if (better<A>(sv[t], si[t], sv[threadIdx.x], si[threadIdx.x], max)) {
                sv[threadIdx.x] = sv[t];
                si[threadIdx.x] = si[t];
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (out_v) out_v[o] = Num<T>::st(sv[0]);
        if (out_i) out_i[o] = si[0];
    }
}

#define REDUCE_FLOAT(S, T)                                                                       \
    extern "C" __global__ void sum_##S(const T* x, Lay l, i64 r, T* out) {                      \
        sum_float<T>(x, l, r, out);                                                             \
    }                                                                                           \
    extern "C" __global__ void col_partial_##S(const T* x, i64 rows, i64 cols,                  \
                                               Num<T>::acc* partial) {                          \
        col_partial_impl<T>(x, rows, cols, partial);                                            \
    }                                                                                           \
    extern "C" __global__ void col_final_##S(const Num<T>::acc* partial, i64 parts, i64 cols,   \
                                             T* out) {                                          \
        col_final_impl<T>(partial, parts, cols, out);                                           \
    }
#define REDUCE_INT(S, T)                                                                         \
    extern "C" __global__ void sum_##S(const T* x, Lay l, i64 r, i64* out) {                    \
        sum_int<T>(x, l, r, out);                                                               \
    }
#define REDUCE_ALL(S, T)                                                                         \
    extern "C" __global__ void extreme_##S(const T* x, Lay l, i64 r, int max, T* out) {         \
        extreme_impl<T>(x, l, r, max != 0, out, (i64*)0);                                       \
    }                                                                                           \
    extern "C" __global__ void arg_extreme_##S(const T* x, Lay l, i64 r, int max, i64* out) {   \
        extreme_impl<T>(x, l, r, max != 0, (T*)0, out);                                         \
    }
#define SUM_PARTIAL(S, T, A)                                                                     \
    extern "C" __global__ void sum_partial_##S(const T* x, Lay l, i64 r, i64 chunks, i64 chunk, \
                                               A* partial) {                                    \
        sum_partial_impl<T, A>(x, l, r, chunks, chunk, partial);                                \
    }
SUM_PARTIAL(f32, float, float) SUM_PARTIAL(f64, double, double) SUM_PARTIAL(f16, f16, float)
SUM_PARTIAL(bf16, bf16, float) SUM_PARTIAL(i64, i64, u64) SUM_PARTIAL(u32, u32, u64)
SUM_PARTIAL(u8, u8, u64)
FOR_FLOATS(REDUCE_FLOAT)
REDUCE_INT(i64, i64) REDUCE_INT(u32, u32) REDUCE_INT(u8, u8)
FOR_ALL(REDUCE_ALL)
