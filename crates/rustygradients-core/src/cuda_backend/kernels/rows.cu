// Row kernels over the last dim, one block per row: softmax / log-softmax (with the causal mask
// attention needs), layer and RMS normalisation, and fused cross-entropy. Rows are read in f32
// (f64 for f64) and reduced with block-wide sums.

// Softmax of row `row`; keys at or after `visible` are masked (0, or -inf for log-softmax).
// `causal_t` > 0: row i of each (t, w) slice sees min(i % t + 1, w) keys.
// `lse_out`, when given, receives each row's logsumexp (what attention's backward recomputes
// the probabilities from).
template <typename T>
__device__ void softmax_impl(const T* x, T* y, i64 w, int log_, i64 causal_t,
                             typename Num<T>::acc* lse_out) {
    typedef typename Num<T>::acc A;
    i64 row = blockIdx.x;
    const T* xr = x + row * w;
    T* yr = y + row * w;
    i64 vis = w;
    if (causal_t > 0) {
        i64 i = row % causal_t + 1;
        vis = i < w ? i : w;
    }
    A m = -INFINITY;
    for (i64 j = threadIdx.x; j < vis; j += blockDim.x) {
        A v = Num<T>::ld(xr[j]);
        m = (v > m || v != v) ? v : m;
    }
    m = block_max<A>(m);
    A s = 0;
    for (i64 j = threadIdx.x; j < vis; j += blockDim.x) s += exp(Num<T>::ld(xr[j]) - m);
    s = block_sum<A>(s);
    A lse = m + log(s), inv = (A)1 / s;
    if (lse_out && threadIdx.x == 0) lse_out[row] = lse;
    for (i64 j = threadIdx.x; j < w; j += blockDim.x) {
        A v = Num<T>::ld(xr[j]);
        A r;
        if (j >= vis) r = log_ ? (A)-INFINITY : (A)0;
        else r = log_ ? v - lse : exp(v - m) * inv;
        yr[j] = Num<T>::st(r);
    }
}
// Attention's probabilities recomputed in place from the scores and each row's logsumexp:
// elementwise over all n elements (rows of w).
template <typename T>
__device__ void probs_from_lse_impl(T* p, const typename Num<T>::acc* lse, i64 n, i64 w,
                                    i64 causal_t) {
    typedef typename Num<T>::acc A;
    GRID_STRIDE(i, n) {
        i64 row = i / w, j = i - row * w;
        i64 vis = causal_t > 0 ? row % causal_t + 1 : w;
        p[i] = Num<T>::st(j < vis ? exp(Num<T>::ld(p[i]) - lse[row]) : (A)0);
    }
}

// Rows of at most 1024: one warp per row, the row in registers (32 values per lane), warp
// shuffles instead of block-wide reductions. Eight rows per block of 256 threads.
#define WARP_MAX 32
template <typename A> __device__ __forceinline__ A warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename A> __device__ __forceinline__ A warp_max(A v) {
    for (int o = 16; o > 0; o >>= 1) {
        A w = __shfl_xor_sync(0xffffffffu, v, o);
        v = (w > v || w != w) ? w : v;
    }
    return v;
}
template <typename T>
__device__ void softmax_warp_impl(const T* x, T* y, i64 rows, i64 w, int log_, i64 causal_t,
                                  typename Num<T>::acc* lse_out) {
    typedef typename Num<T>::acc A;
    i64 row = (i64)blockIdx.x * 8 + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    i64 vis = w;
    if (causal_t > 0) {
        i64 i = row % causal_t + 1;
        vis = i < w ? i : w;
    }
    A v[WARP_MAX];
    A m = -INFINITY;
#pragma unroll
    for (int k = 0; k < WARP_MAX; ++k) {
        i64 j = lane + 32 * k;
        v[k] = j < vis ? Num<T>::ld(x[row * w + j]) : (A)-INFINITY;
        m = (v[k] > m || v[k] != v[k]) ? v[k] : m;
    }
    m = warp_max<A>(m);
    A s = 0;
#pragma unroll
    for (int k = 0; k < WARP_MAX; ++k) {
        i64 j = lane + 32 * k;
        if (j < vis) s += exp(v[k] - m);
    }
    s = warp_sum<A>(s);
    A lse = m + log(s), inv = (A)1 / s;
    if (lse_out && lane == 0) lse_out[row] = lse;
#pragma unroll
    for (int k = 0; k < WARP_MAX; ++k) {
        i64 j = lane + 32 * k;
        if (j < w) {
            A r;
            if (j >= vis) r = log_ ? (A)-INFINITY : (A)0;
            else r = log_ ? v[k] - lse : exp(v[k] - m) * inv;
            y[row * w + j] = Num<T>::st(r);
        }
    }
}
template <typename T>
__device__ void softmax_bwd_warp_impl(const T* y, const T* g, T* out, i64 rows, i64 w, int log_) {
    typedef typename Num<T>::acc A;
    i64 row = (i64)blockIdx.x * 8 + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    A yv[WARP_MAX], gv[WARP_MAX];
    A s = 0;
#pragma unroll
    for (int k = 0; k < WARP_MAX; ++k) {
        i64 j = lane + 32 * k;
        yv[k] = j < w ? Num<T>::ld(y[row * w + j]) : (A)0;
        gv[k] = j < w ? Num<T>::ld(g[row * w + j]) : (A)0;
        s += log_ ? gv[k] : gv[k] * yv[k];
    }
    s = warp_sum<A>(s);
#pragma unroll
    for (int k = 0; k < WARP_MAX; ++k) {
        i64 j = lane + 32 * k;
        if (j < w) out[row * w + j] = Num<T>::st(log_ ? gv[k] - exp(yv[k]) * s : yv[k] * (gv[k] - s));
    }
}
template <typename T>
__device__ void softmax_bwd_impl(const T* y, const T* g, T* out, i64 w, int log_) {
    typedef typename Num<T>::acc A;
    i64 row = blockIdx.x;
    const T* yr = y + row * w;
    const T* gr = g + row * w;
    T* o = out + row * w;
    A s = 0;
    for (i64 j = threadIdx.x; j < w; j += blockDim.x)
        s += log_ ? Num<T>::ld(gr[j]) : Num<T>::ld(gr[j]) * Num<T>::ld(yr[j]);
    s = block_sum<A>(s);
    for (i64 j = threadIdx.x; j < w; j += blockDim.x) {
        A yv = Num<T>::ld(yr[j]), gv = Num<T>::ld(gr[j]);
        o[j] = Num<T>::st(log_ ? gv - exp(yv) * s : yv * (gv - s));
    }
}
template <typename T>
__device__ void norm_impl(const T* x, T* xhat, T* rstd, i64 w, double eps, int rms) {
    typedef typename Num<T>::acc A;
    i64 row = blockIdx.x;
    const T* xr = x + row * w;
    A mean = 0;
    if (!rms) {
        for (i64 j = threadIdx.x; j < w; j += blockDim.x) mean += Num<T>::ld(xr[j]);
        mean = block_sum<A>(mean) / (A)w;
    }
    A var = 0;
    for (i64 j = threadIdx.x; j < w; j += blockDim.x) {
        A d = Num<T>::ld(xr[j]) - mean;
        var += d * d;
    }
    var = block_sum<A>(var) / (A)w;
    A rs = (A)1 / sqrt(var + (A)eps);
    for (i64 j = threadIdx.x; j < w; j += blockDim.x)
        xhat[row * w + j] = Num<T>::st((Num<T>::ld(xr[j]) - mean) * rs);
    if (threadIdx.x == 0) rstd[row] = Num<T>::st(rs);
}
template <typename T>
__device__ void norm_bwd_impl(const T* xhat, const T* rstd, const T* g, T* out, i64 w, int rms) {
    typedef typename Num<T>::acc A;
    i64 row = blockIdx.x;
    const T* xr = xhat + row * w;
    const T* gr = g + row * w;
    A mg = 0, mgx = 0;
    for (i64 j = threadIdx.x; j < w; j += blockDim.x) {
        A gv = Num<T>::ld(gr[j]);
        mg += gv;
        mgx += gv * Num<T>::ld(xr[j]);
    }
    mg = rms ? (A)0 : block_sum<A>(mg) / (A)w;
    mgx = block_sum<A>(mgx) / (A)w;
    A rs = Num<T>::ld(rstd[row]);
    for (i64 j = threadIdx.x; j < w; j += blockDim.x)
        out[row * w + j] = Num<T>::st(rs * (Num<T>::ld(gr[j]) - mg - Num<T>::ld(xr[j]) * mgx));
}

// Cross-entropy of row `row` against `targets[row]` (op code 4 for a bad target).
template <typename T>
__device__ bool ce_target(const i64* targets, i64 row, i64 c, i64 ignore, int has_ignore, i64* err,
                          i64* t) {
    *t = targets[row];
    if (has_ignore && *t == ignore) return false;
    if (*t < 0 || *t >= c) {
        if (threadIdx.x == 0) report_bad_index(err, 4, *t, c);
        return false;
    }
    return true;
}
// exp for softmax sums: the SFU's exp2 in f32 (a few ulp, far below the sums' rounding).
__device__ __forceinline__ float fexp(float x) { return __expf(x); }
__device__ __forceinline__ double fexp(double x) { return exp(x); }

// Rows whose width is a whole number of packs (and an aligned base) are read 16 bytes at a time.
template <typename T> __device__ bool packed_rows(const void* p, i64 c) {
    return c % PackWidth<T, T>::P == 0 && ((u64)p & 15) == 0;
}

// The logsumexp of row `xr` (`c` wide), reduced over the block; every thread gets it, and all
// have finished reading the row when it returns.
template <typename T>
__device__ typename Num<T>::acc ce_row_lse(const T* xr, i64 c) {
    typedef typename Num<T>::acc A;
    const int P = PackWidth<T, T>::P;
    // One pass over the row: each thread keeps a running max and the sum of exponentials
    // relative to it, and the block combines the pairs (a NaN anywhere gives NaN). Values
    // are merged a pack at a time: the pack's max first, then one rescale of the sum.
    A m = -INFINITY, s = 0;
    if (packed_rows<T>(xr, c)) {
        const Pack<T, P>* xp = (const Pack<T, P>*)xr;
        for (i64 j = threadIdx.x; j < c / P; j += blockDim.x) {
            Pack<T, P> pk = xp[j];
            A v[P], pm = -INFINITY;
#pragma unroll
            for (int k = 0; k < P; ++k) {
                v[k] = Num<T>::ld(pk.v[k]);
                pm = (v[k] > pm || v[k] != v[k]) ? v[k] : pm;
            }
            A nm = (pm > m || pm != pm) ? pm : m;
            if (nm == -INFINITY) continue;
            A acc = 0;
#pragma unroll
            for (int k = 0; k < P; ++k) acc += fexp(v[k] - nm);
            s = (m == -INFINITY ? (A)0 : s * fexp(m - nm)) + acc;
            m = nm;
        }
    } else {
        for (i64 j = threadIdx.x; j < c; j += blockDim.x) {
            A v = Num<T>::ld(xr[j]);
            if (v > m || v != v) {
                s = (m == -INFINITY ? (A)0 : s * fexp(m - v)) + (A)1;
                m = v;
            } else if (v != -INFINITY) {
                s += fexp(v - m);
            }
        }
    }
    A mm = block_max<A>(m);
    s = block_sum<A>(m == -INFINITY ? (A)0 : s * fexp(m - mm));
    return mm + log(s);
}
template <typename T>
__device__ void ce_fwd_impl(const T* x, const i64* targets, typename Num<T>::acc* nll,
                            typename Num<T>::acc* lse_out,
                            i64 c, i64 ignore, int has_ignore, i64* err) {
    typedef typename Num<T>::acc A;
    i64 row = blockIdx.x;
    const T* xr = x + row * c;
    A lse = ce_row_lse<T>(xr, c);
    if (threadIdx.x == 0) {
        i64 t;
        bool ok = ce_target<T>(targets, row, c, ignore, has_ignore, err, &t);
        nll[row] = ok ? lse - Num<T>::ld(xr[t]) : (A)0;
        lse_out[row] = lse;
    }
}
template <typename T>
__device__ void ce_bwd_impl(const T* x, const i64* targets, const typename Num<T>::acc* lse,
                            const typename Num<T>::acc* g, T* out, i64 c, i64 ignore, int has_ignore, i64* err) {
    typedef typename Num<T>::acc A;
    const int P = PackWidth<T, T>::P;
    i64 row = blockIdx.x;
    i64 t;
    bool ok = ce_target<T>(targets, row, c, ignore, has_ignore, err, &t);
    A gv = ok ? g[row] : (A)0, l = lse[row];
    if (!ok) t = -1;
    const T* xr = x + row * c;
    T* orow = out + row * c;
    if (packed_rows<T>(x, c) && packed_rows<T>(out, c)) {
        const Pack<T, P>* xp = (const Pack<T, P>*)xr;
        Pack<T, P>* op = (Pack<T, P>*)orow;
        for (i64 j = threadIdx.x; j < c / P; j += blockDim.x) {
            Pack<T, P> pk = xp[j], r;
#pragma unroll
            for (int k = 0; k < P; ++k) {
                A p = fexp(Num<T>::ld(pk.v[k]) - l);
                r.v[k] = Num<T>::st((p - (j * P + k == t ? (A)1 : (A)0)) * gv);
            }
            op[j] = r;
        }
    } else {
        for (i64 j = threadIdx.x; j < c; j += blockDim.x) {
            A p = fexp(Num<T>::ld(xr[j]) - l);
            orow[j] = Num<T>::st((p - (j == t ? (A)1 : (A)0)) * gv);
        }
    }
}

// The fused forward's target for `row` (-1 when ignored or out of range, whose loss is then
// written as 0 here) and the scale of the row's gradient (0 for those rows).
template <typename T>
__device__ typename Num<T>::acc ce_grad_target(const i64* targets, i64 row, i64 c,
                                               typename Num<T>::acc scale, i64 ignore,
                                               int has_ignore, i64* err,
                                               typename Num<T>::acc* nll, i64* t) {
    if (ce_target<T>(targets, row, c, ignore, has_ignore, err, t)) return scale;
    *t = -1;
    if (threadIdx.x == 0) nll[row] = 0;
    return 0;
}
// The forward and the backward in one pass, for a loss whose logits nothing else reads: each
// row's loss, and the row overwritten by its gradient `(softmax - onehot) · scale` (0 for an
// ignored target). The thread that holds the target's logit writes the loss.
template <typename T>
__device__ void ce_fwd_grad_impl(T* x, const i64* targets, typename Num<T>::acc* nll, i64 c,
                                 typename Num<T>::acc scale, i64 ignore, int has_ignore, i64* err) {
    typedef typename Num<T>::acc A;
    const int P = PackWidth<T, T>::P;
    i64 row = blockIdx.x;
    T* xr = x + row * c;
    A l = ce_row_lse<T>(xr, c);
    i64 t;
    A gv = ce_grad_target<T>(targets, row, c, scale, ignore, has_ignore, err, nll, &t);
    if (packed_rows<T>(x, c)) {
        Pack<T, P>* xp = (Pack<T, P>*)xr;
        for (i64 j = threadIdx.x; j < c / P; j += blockDim.x) {
            Pack<T, P> pk = xp[j], r;
#pragma unroll
            for (int k = 0; k < P; ++k) {
                A v = Num<T>::ld(pk.v[k]);
                bool hit = j * P + k == t;
                if (hit) nll[row] = l - v;
                r.v[k] = Num<T>::st((fexp(v - l) - (hit ? (A)1 : (A)0)) * gv);
            }
            xp[j] = r;
        }
    } else {
        for (i64 j = threadIdx.x; j < c; j += blockDim.x) {
            A v = Num<T>::ld(xr[j]);
            if (j == t) nll[row] = l - v;
            xr[j] = Num<T>::st((fexp(v - l) - (j == t ? (A)1 : (A)0)) * gv);
        }
    }
}
// `ce_fwd_grad_impl` for rows of whole packs that fit in shared memory, at the cost of memory
// rather than arithmetic: the row is read from global memory once (four packs in flight per
// thread) into shared memory, with its maximum; then the sum of exponentials and the gradient
// are each one FFMA and one `ex2` per element from shared memory; the target's element is fixed
// by the thread whose pack holds it. A NaN anywhere makes the sum, so the loss, NaN.
template <typename T>
__device__ void ce_fwd_grad_smem_impl(T* x, const i64* targets, typename Num<T>::acc* nll, i64 c,
                                      typename Num<T>::acc scale, i64 ignore, int has_ignore,
                                      i64* err) {
    typedef typename Num<T>::acc A;
    const int P = PackWidth<T, T>::P, U = 4;
    const A L2E = (A)1.4426950408889634;
    extern __shared__ __align__(16) unsigned char ce_smem[];
    Pack<T, P>* sp = (Pack<T, P>*)ce_smem;
    i64 row = blockIdx.x;
    Pack<T, P>* xp = (Pack<T, P>*)(x + row * c);
    int np = (int)(c / P), nt = blockDim.x;
    A m = -INFINITY;
    for (int j0 = threadIdx.x; j0 < np; j0 += U * nt) {
        Pack<T, P> pk[U];
#pragma unroll
        for (int u = 0; u < U; ++u)
            if (j0 + u * nt < np) pk[u] = xp[j0 + u * nt];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (j0 + u * nt >= np) break;
            sp[j0 + u * nt] = pk[u];
#pragma unroll
            for (int k = 0; k < P; ++k) m = fmax(m, Num<T>::ld(pk[u].v[k]));
        }
    }
    m = block_max<A>(m);
    // exp(v - m) = 2^(v·log2e - m·log2e); a row of -inf sums to 0 (logsumexp -inf).
    A ml = m == -INFINITY ? (A)0 : m * L2E, s = 0;
    for (int j = threadIdx.x; j < np; j += nt) {
        Pack<T, P> pk = sp[j];
#pragma unroll
        for (int k = 0; k < P; ++k) s += ex2(Num<T>::ld(pk.v[k]) * L2E - ml);
    }
    s = block_sum<A>(s);
    A l = m + log(s), ll = l * L2E;
    i64 t;
    A gv = ce_grad_target<T>(targets, row, c, scale, ignore, has_ignore, err, nll, &t);
    int jt = t < 0 ? -1 : (int)(t / P);
    for (int j = threadIdx.x; j < np; j += nt) {
        Pack<T, P> pk = sp[j], r;
#pragma unroll
        for (int k = 0; k < P; ++k) r.v[k] = Num<T>::st(ex2(Num<T>::ld(pk.v[k]) * L2E - ll) * gv);
        if (j == jt) {
#pragma unroll
            for (int k = 0; k < P; ++k)
                if (k == t - (i64)jt * P) {
                    A v = Num<T>::ld(pk.v[k]);
                    nll[row] = l - v;
                    r.v[k] = Num<T>::st((ex2(v * L2E - ll) - (A)1) * gv);
                }
        }
        xp[j] = r;
    }
}
// Rows of a gradient written at `scale` (above) brought to the output gradient `g[row]`: rows
// where the two agree (a mean loss backpropagated from 1) are left alone, so that the usual
// backward reads no more than `g`. Blocks walk rows grid-stride.
template <typename T>
__device__ void ce_grad_rescale_impl(T* d, const typename Num<T>::acc* g, i64 rows, i64 c,
                                     typename Num<T>::acc scale) {
    typedef typename Num<T>::acc A;
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        A gv = g[row];
        if (gv == scale) continue;
        A f = gv / scale;
        T* r = d + row * c;
        for (i64 j = threadIdx.x; j < c; j += blockDim.x) r[j] = Num<T>::st(Num<T>::ld(r[j]) * f);
    }
}

#define ROWS(S, T)                                                                               \
    extern "C" __global__ void softmax_##S(const T* x, T* y, i64 w, int log_, i64 causal_t,     \
                                           Num<T>::acc* lse) {                                  \
        softmax_impl<T>(x, y, w, log_, causal_t, lse);                                          \
    }                                                                                           \
    extern "C" __global__ void probs_from_lse_##S(T* p, const Num<T>::acc* lse, i64 n, i64 w,   \
                                                  i64 causal_t) {                               \
        probs_from_lse_impl<T>(p, lse, n, w, causal_t);                                         \
    }                                                                                           \
    extern "C" __global__ void softmax_warp_##S(const T* x, T* y, i64 rows, i64 w, int log_,    \
                                                i64 causal_t, Num<T>::acc* lse) {               \
        softmax_warp_impl<T>(x, y, rows, w, log_, causal_t, lse);                               \
    }                                                                                           \
    extern "C" __global__ void softmax_bwd_warp_##S(const T* y, const T* g, T* out, i64 rows,   \
                                                    i64 w, int log_) {                          \
        softmax_bwd_warp_impl<T>(y, g, out, rows, w, log_);                                     \
    }                                                                                           \
    extern "C" __global__ void softmax_bwd_##S(const T* y, const T* g, T* out, i64 w, int log_) {\
        softmax_bwd_impl<T>(y, g, out, w, log_);                                                \
    }                                                                                           \
    extern "C" __global__ void norm_##S(const T* x, T* xhat, T* rstd, i64 w, double eps,        \
                                        int rms) {                                              \
        norm_impl<T>(x, xhat, rstd, w, eps, rms);                                               \
    }                                                                                           \
    extern "C" __global__ void norm_bwd_##S(const T* xhat, const T* rstd, const T* g, T* out,   \
                                            i64 w, int rms) {                                   \
        norm_bwd_impl<T>(xhat, rstd, g, out, w, rms);                                           \
    }                                                                                           \
    extern "C" __global__ void ce_fwd_##S(const T* x, const i64* t, Num<T>::acc* nll,           \
                                          Num<T>::acc* lse, i64 c, i64 ignore, int has_ignore,  \
                                          i64* err) {                                           \
        ce_fwd_impl<T>(x, t, nll, lse, c, ignore, has_ignore, err);                             \
    }                                                                                           \
    extern "C" __global__ void ce_bwd_##S(const T* x, const i64* t, const Num<T>::acc* lse,     \
                                          const Num<T>::acc* g, T* out, i64 c, i64 ignore,      \
                                          int has_ignore, i64* err) {                           \
        ce_bwd_impl<T>(x, t, lse, g, out, c, ignore, has_ignore, err);                          \
    }                                                                                           \
    extern "C" __global__ void ce_fwd_grad_##S(T* x, const i64* t, Num<T>::acc* nll, i64 c,     \
                                               Num<T>::acc scale, i64 ignore, int has_ignore,   \
                                               i64* err) {                                      \
        ce_fwd_grad_impl<T>(x, t, nll, c, scale, ignore, has_ignore, err);                      \
    }                                                                                           \
    extern "C" __global__ void ce_fwd_grad_smem_##S(T* x, const i64* t, Num<T>::acc* nll,       \
                                                    i64 c, Num<T>::acc scale, i64 ignore,       \
                                                    int has_ignore, i64* err) {                 \
        ce_fwd_grad_smem_impl<T>(x, t, nll, c, scale, ignore, has_ignore, err);                 \
    }                                                                                           \
    extern "C" __global__ void ce_grad_rescale_##S(T* d, const Num<T>::acc* g, i64 rows, i64 c, \
                                                   Num<T>::acc scale) {                         \
        ce_grad_rescale_impl<T>(d, g, rows, c, scale);                                          \
    }
FOR_FLOATS(ROWS)

// ---------------------------------------------------------------------------------------------
// LayerNorm / RMSNorm with the affine weight and bias in one pass, one warp per row: f32
// statistics whatever the dtypes; the output may be narrower than the input (autocast's bf16
// for a following matmul). `w`/`b` may be null (no weight / no bias).
template <typename T, typename P, typename O>
__device__ void ln_fwd_impl(const T* x, const P* w, const P* b, O* y, float* mean_out,
                            float* rstd_out, i64 rows, i64 c, float eps, int rms) {
    i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const T* xr = x + row * c;
    float mean = 0.f;
    if (!rms) {
        for (i64 j = lane; j < c; j += 32) mean += Num<T>::ld(xr[j]);
        mean = warp_sum<float>(mean) / (float)c;
    }
    float var = 0.f;
    for (i64 j = lane; j < c; j += 32) {
        float d = Num<T>::ld(xr[j]) - mean;
        var += d * d;
    }
    var = warp_sum<float>(var) / (float)c;
    float rs = rsqrtf(var + eps);
    O* yr = y + row * c;
    for (i64 j = lane; j < c; j += 32) {
        float v = (Num<T>::ld(xr[j]) - mean) * rs;
        if (w) v *= Num<P>::ld(w[j]);
        if (b) v += Num<P>::ld(b[j]);
        yr[j] = Num<O>::st(v);
    }
    if (lane == 0) {
        mean_out[row] = mean;
        rstd_out[row] = rs;
    }
}

// The input gradient per row, and the weight and bias gradients summed over rows: each warp
// walks rows grid-stride keeping its column sums in registers (rows up to 32·LN_KMAX wide;
// wider rows add into shared memory instead), then the block's warps add them up in shared
// memory (f32, 2·c) and the block adds that into the f32 `dw`/`db`, one atomic per column.
#define LN_KMAX 32
template <typename T, typename P, typename O>
__device__ void ln_bwd_impl(const T* x, const P* w, const float* mean_in, const float* rstd_in,
                            const O* g, T* dx, float* dw, float* db, i64 rows, i64 c, int rms,
                            int acc) {
    extern __shared__ float ln_smem[];
    float* sdw = ln_smem;
    float* sdb = ln_smem + c;
    for (i64 j = threadIdx.x; j < 2 * c; j += blockDim.x) ln_smem[j] = 0.f;
    __syncthreads();
    int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    const bool regs = c <= 32 * LN_KMAX;
    float rdw[LN_KMAX], rdb[LN_KMAX];
#pragma unroll
    for (int k = 0; k < LN_KMAX; ++k) rdw[k] = rdb[k] = 0.f;
    for (i64 row = (i64)blockIdx.x * warps + (threadIdx.x >> 5); row < rows;
         row += (i64)gridDim.x * warps) {
        const T* xr = x + row * c;
        const O* gr = g + row * c;
        float mean = mean_in[row], rs = rstd_in[row];
        float mg = 0.f, mgx = 0.f;
        if (regs) {
#pragma unroll
            for (int k = 0; k < LN_KMAX; ++k) {
                i64 j = lane + 32 * k;
                if (j < c) {
                    float gv = Num<O>::ld(gr[j]);
                    float xh = (Num<T>::ld(xr[j]) - mean) * rs;
                    float gx = w ? gv * Num<P>::ld(w[j]) : gv;
                    mg += gx;
                    mgx += gx * xh;
                    rdw[k] += gv * xh;
                    rdb[k] += gv;
                }
            }
        } else {
            for (i64 j = lane; j < c; j += 32) {
                float gv = Num<O>::ld(gr[j]);
                float xh = (Num<T>::ld(xr[j]) - mean) * rs;
                float gx = w ? gv * Num<P>::ld(w[j]) : gv;
                mg += gx;
                mgx += gx * xh;
                if (dw) atomicAdd(&sdw[j], gv * xh);
                if (db) atomicAdd(&sdb[j], gv);
            }
        }
        mg = rms ? 0.f : warp_sum<float>(mg) / (float)c;
        mgx = warp_sum<float>(mgx) / (float)c;
        for (i64 j = lane; j < c; j += 32) {
            float gv = Num<O>::ld(gr[j]);
            float xh = (Num<T>::ld(xr[j]) - mean) * rs;
            float gx = w ? gv * Num<P>::ld(w[j]) : gv;
            float d = rs * (gx - mg - xh * mgx);
            dx[row * c + j] = Num<T>::st(acc ? Num<T>::ld(dx[row * c + j]) + d : d);
        }
    }
    if (regs) {
#pragma unroll
        for (int k = 0; k < LN_KMAX; ++k) {
            i64 j = lane + 32 * k;
            if (j < c) {
                if (dw) atomicAdd(&sdw[j], rdw[k]);
                if (db) atomicAdd(&sdb[j], rdb[k]);
            }
        }
    }
    __syncthreads();
    for (i64 j = threadIdx.x; j < c; j += blockDim.x) {
        if (dw) atomicAdd(&dw[j], sdw[j]);
        if (db) atomicAdd(&db[j], sdb[j]);
    }
}

// The same two kernels for rows of c = 8·n elements, n ≤ 32·V, with every pointer aligned to
// eight elements: each lane moves whole packs of eight (16 bytes for 16-bit types), packs
// lane, lane + 32, … of its row, so a warp's loads are wide and all of a row's are in flight
// at once. The forward keeps its row in registers.
template <typename T> __device__ __forceinline__ void ld8(const T* p, float* v) {
    Pack<T, 8> pk = *(const Pack<T, 8>*)p;
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = Num<T>::ld(pk.v[i]);
}
template <typename T> __device__ __forceinline__ void st8(T* p, const float* v) {
    Pack<T, 8> pk;
#pragma unroll
    for (int i = 0; i < 8; ++i) pk.v[i] = Num<T>::st(v[i]);
    *(Pack<T, 8>*)p = pk;
}
template <typename T, typename P, typename O, int V>
__device__ void ln_fwd8_impl(const T* x, const P* w, const P* b, O* y, float* mean_out,
                             float* rstd_out, i64 rows, i64 c, float eps, int rms) {
    i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31, np = (int)(c >> 3);
    if (row >= rows) return;
    const T* xr = x + row * c;
    float v[V][8];
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < V; ++k) {
        int p = lane + 32 * k;
        if (p < np) {
            ld8(xr + 8 * p, v[k]);
#pragma unroll
            for (int i = 0; i < 8; ++i) sum += v[k][i];
        }
    }
    float mean = rms ? 0.f : warp_sum<float>(sum) / (float)c;
    float var = 0.f;
#pragma unroll
    for (int k = 0; k < V; ++k) {
        if (lane + 32 * k < np) {
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                float d = v[k][i] - mean;
                var += d * d;
            }
        }
    }
    float rs = rsqrtf(warp_sum<float>(var) / (float)c + eps);
    O* yr = y + row * c;
#pragma unroll
    for (int k = 0; k < V; ++k) {
        int p = lane + 32 * k;
        if (p < np) {
            float wv[8], bv[8];
            if (w) ld8(w + 8 * p, wv);
            if (b) ld8(b + 8 * p, bv);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                float o = (v[k][i] - mean) * rs;
                if (w) o *= wv[i];
                if (b) o += bv[i];
                v[k][i] = o;
            }
            st8(yr + 8 * p, v[k]);
        }
    }
    if (lane == 0) {
        mean_out[row] = mean;
        rstd_out[row] = rs;
    }
}
// The backward walks its warp's rows keeping each row's raw packs of x and g, its mean and its
// 1/σ in registers as loaded, and loads the next row's while it works on this one. (Prefetching
// the gradient added into with `acc` as well measured slower, 1.45 against 1.33 ms a GPT-2
// step on an H200: its registers cost a quarter of the resident warps, and the kernel is bound
// by issue, not by memory.) Two passes over the registers: one for the two row means the input
// gradient needs, adding the row's share of the weight and bias gradients to the warp's own
// sums in shared memory (2·c floats per warp) on the way, one to write the gradient. The block
// then writes its warps' sums as its row of `part` (gridDim rows of 2·c f32), which `ln_cols`
// adds up into `dw`/`db`: no atomics on 2·c hot addresses. With `acc` set (both kernels), the
// input gradient is added to what `dx` holds: a residual stream's gradient, summed in place.
template <typename T, typename O, int V> struct LnRow {
    Pack<T, 8> x[V];
    Pack<O, 8> g[V];
    float mean, rs;
};
template <typename T, typename O, int V>
__device__ __forceinline__ void ln_row_load(const T* x, const O* g, const float* mean,
                                            const float* rstd, i64 row, i64 rows, i64 c,
                                            int lane, int np, LnRow<T, O, V>& r) {
    if (row >= rows) return;
    r.mean = mean[row];
    r.rs = rstd[row];
#pragma unroll
    for (int k = 0; k < V; ++k) {
        int p = lane + 32 * k;
        if (p < np) {
            r.x[k] = *(const Pack<T, 8>*)(x + row * c + 8 * p);
            r.g[k] = *(const Pack<O, 8>*)(g + row * c + 8 * p);
        }
    }
}
// `s[0..8] += v[0..8]` on 16-byte aligned shared memory.
__device__ __forceinline__ void smem_add8(float* s, const float* v) {
    float4* q = (float4*)s;
    float4 a = q[0], b = q[1];
    a.x += v[0]; a.y += v[1]; a.z += v[2]; a.w += v[3];
    b.x += v[4]; b.y += v[5]; b.z += v[6]; b.w += v[7];
    q[0] = a;
    q[1] = b;
}
template <typename T, typename P, typename O, int V>
__device__ void ln_bwd8_impl(const T* x, const P* w, const float* mean_in, const float* rstd_in,
                             const O* g, T* dx, float* part, i64 rows, i64 c, int rms, int acc) {
    extern __shared__ float ln_smem[];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    int np = (int)(c >> 3);
    for (i64 j = threadIdx.x; j < 2 * c * warps; j += blockDim.x) ln_smem[j] = 0.f;
    __syncthreads();
    float* sdw = ln_smem + 2 * c * warp;
    float* sdb = sdw + c;
    i64 stride = (i64)gridDim.x * warps;
    i64 row = (i64)blockIdx.x * warps + warp;
    LnRow<T, O, V> cur, nxt;
    ln_row_load<T, O, V>(x, g, mean_in, rstd_in, row, rows, c, lane, np, cur);
    for (; row < rows; row += stride) {
        ln_row_load<T, O, V>(x, g, mean_in, rstd_in, row + stride, rows, c, lane, np, nxt);
        float mean = cur.mean, rs = cur.rs;
        float mg = 0.f, mgx = 0.f;
#pragma unroll
        for (int k = 0; k < V; ++k) {
            int p = lane + 32 * k;
            if (p < np) {
                float wv[8], pw[8], pb[8];
                if (w) ld8(w + 8 * p, wv);
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    float gv = Num<O>::ld(cur.g[k].v[i]);
                    float xh = (Num<T>::ld(cur.x[k].v[i]) - mean) * rs;
                    float gx = w ? gv * wv[i] : gv;
                    mg += gx;
                    mgx += gx * xh;
                    pw[i] = gv * xh;
                    pb[i] = gv;
                }
                smem_add8(sdw + 8 * p, pw);
                smem_add8(sdb + 8 * p, pb);
            }
        }
        mg = rms ? 0.f : warp_sum<float>(mg) / (float)c;
        mgx = warp_sum<float>(mgx) / (float)c;
        T* dr = dx + row * c;
#pragma unroll
        for (int k = 0; k < V; ++k) {
            int p = lane + 32 * k;
            if (p < np) {
                float wv[8], av[8], out[8];
                if (w) ld8(w + 8 * p, wv);
                if (acc) ld8(dr + 8 * p, av);
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    float gv = Num<O>::ld(cur.g[k].v[i]);
                    float xh = (Num<T>::ld(cur.x[k].v[i]) - mean) * rs;
                    float gx = w ? gv * wv[i] : gv;
                    out[i] = rs * (gx - mg - xh * mgx);
                    if (acc) out[i] += av[i];
                }
                st8(dr + 8 * p, out);
            }
        }
        cur = nxt;
    }
    __syncthreads();
    float* out = part + 2 * c * blockIdx.x;
    for (i64 j = threadIdx.x; j < 2 * c; j += blockDim.x) {
        float a = 0.f;
        for (int v = 0; v < warps; ++v) a += ln_smem[2 * c * v + j];
        out[j] = a;
    }
}
// `dw[j] += Σ_b part[b][j]`, `db[j] += Σ_b part[b][c + j]` over the `nb` rows of `part`
// (either output may be null): blocks of 256 threads take 32 columns by LN_COLS_ROWS rows,
// eight rows in flight per column, and add their sums with one atomic per column.
#define LN_COLS_ROWS 64
extern "C" __global__ void ln_cols(const float* part, i64 nb, i64 c, float* dw, float* db) {
    __shared__ float sum[8][33];
    int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    i64 j = (i64)blockIdx.x * 32 + tx;
    i64 b0 = (i64)blockIdx.y * LN_COLS_ROWS;
    i64 b1 = b0 + LN_COLS_ROWS < nb ? b0 + LN_COLS_ROWS : nb;
    float a = 0.f;
    if (j < 2 * c) {
#pragma unroll 8
        for (i64 b = b0 + ty; b < b1; b += 8) a += part[b * 2 * c + j];
    }
    sum[ty][tx] = a;
    __syncthreads();
    if (ty == 0 && j < 2 * c) {
        for (int y = 1; y < 8; ++y) a += sum[y][tx];
        float* o = j < c ? (dw ? dw + j : 0) : (db ? db + (j - c) : 0);
        if (o) atomicAdd(o, a);
    }
}

#define LN8_KERNELS(S, T, SP, P, SO, O, V, B)                                                    \
    extern "C" __global__ void ln_fwd8x##V##_##S##_##SP##_##SO(                                  \
        const T* x, const P* w, const P* b, O* y, float* mean, float* rstd, i64 rows, i64 c,     \
        float eps, int rms) {                                                                    \
        ln_fwd8_impl<T, P, O, V>(x, w, b, y, mean, rstd, rows, c, eps, rms);                     \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(128, B) ln_bwd8x##V##_##S##_##SP##_##SO(        \
        const T* x, const P* w, const float* mean, const float* rstd, const O* g, T* dx,         \
        float* part, i64 rows, i64 c, int rms, int acc) {                                        \
        ln_bwd8_impl<T, P, O, V>(x, w, mean, rstd, g, dx, part, rows, c, rms, acc);              \
    }
// The last argument: the blocks an SM runs, which bounds the backward's registers (four packs
// a lane, c up to 1024, need more than 128 registers without spilling: three blocks).
#define LN8_WIDTHS(S, T, SP, P, SO, O)                                                           \
    LN8_KERNELS(S, T, SP, P, SO, O, 1, 4)                                                        \
    LN8_KERNELS(S, T, SP, P, SO, O, 2, 4)                                                        \
    LN8_KERNELS(S, T, SP, P, SO, O, 3, 4)                                                        \
    LN8_KERNELS(S, T, SP, P, SO, O, 4, 3)

#define LN_KERNELS(S, T, SP, P, SO, O)                                                           \
    extern "C" __global__ void ln_fwd_##S##_##SP##_##SO(const T* x, const P* w, const P* b,     \
                                                        O* y, float* mean, float* rstd,         \
                                                        i64 rows, i64 c, float eps, int rms) {  \
        ln_fwd_impl<T, P, O>(x, w, b, y, mean, rstd, rows, c, eps, rms);                        \
    }                                                                                           \
    extern "C" __global__ void ln_bwd_##S##_##SP##_##SO(const T* x, const P* w,                 \
                                                        const float* mean, const float* rstd,   \
                                                        const O* g, T* dx, float* dw,           \
                                                        float* db, i64 rows, i64 c, int rms,    \
                                                        int acc) {                              \
        ln_bwd_impl<T, P, O>(x, w, mean, rstd, g, dx, dw, db, rows, c, rms, acc);               \
    }
// (input, parameters, output): plain f32/f16/bf16, and autocast's f32 or half input with f32
// parameters and a half output.
LN_KERNELS(f32, float, f32, float, f32, float)
LN_KERNELS(f16, f16, f16, f16, f16, f16)
LN_KERNELS(bf16, bf16, bf16, bf16, bf16, bf16)
LN_KERNELS(f32, float, f32, float, bf16, bf16)
LN_KERNELS(f32, float, f32, float, f16, f16)
LN_KERNELS(bf16, bf16, f32, float, bf16, bf16)
LN_KERNELS(f16, f16, f32, float, f16, f16)
LN8_WIDTHS(f32, float, f32, float, f32, float)
LN8_WIDTHS(f16, f16, f16, f16, f16, f16)
LN8_WIDTHS(bf16, bf16, bf16, bf16, bf16, bf16)
LN8_WIDTHS(f32, float, f32, float, bf16, bf16)
LN8_WIDTHS(f32, float, f32, float, f16, f16)
LN8_WIDTHS(bf16, bf16, f32, float, bf16, bf16)
LN8_WIDTHS(f16, f16, f32, float, f16, f16)
