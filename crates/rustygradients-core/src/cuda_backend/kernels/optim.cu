// The fused Adam/AdamW step, in place. One launch updates up to
// ADAM_MAX parameters: `ptrs` holds, per tensor, the device addresses of parameter, first
// moment, second moment, gradient and half-precision shadow (0 for none: the copy autocast
// reads, rewritten from the updated parameter), and `ends` the running element counts (tensor
// k covers ends[k-1] .. ends[k] of the flattened range). The batch is passed by value: no
// upload. The single-pointer kernels below use the first ADAM_MAX slots of `ptrs`.

#define ADAM_MAX 32
#define ADAM_WIDTH 5
struct AdamBatch {
    u64 ptrs[ADAM_WIDTH * ADAM_MAX];
    i64 ends[ADAM_MAX];
    int n;
};

struct AdamConsts {
    double beta1, beta2, eps, weight_decay, decay, step_size, bc2_sqrt;
    int decoupled;
    // The shadows' dtype: 1 bf16, 2 f16.
    int half;
    // 0, or the address of one f64 every gradient is multiplied by first (gradient clipping's
    // coefficient, read on the device).
    u64 gscale;
};

// `x` rounded to the shadows' dtype (`half`: 1 bf16, 2 f16), as raw bits.
template <typename A> __device__ __forceinline__ unsigned short half_bits(A x, int half) {
    return half == 1 ? f32_to_bf16((float)x).x : f32_to_f16((float)x).x;
}

// Each block works on one chunk of OPTIM_CHUNK elements inside one tensor (so no per-element
// search for the tensor), its threads moving 16 bytes per load where the tensors are aligned.
// The sum of squares, which writes one number per block, takes SUMSQ_CHUNK.
#define OPTIM_CHUNK 4096
#define SUMSQ_CHUNK 32768

struct Span {
    int t;
    i64 begin, end;
};
// The tensor and element range of this block: tensor k has ceil(len_k / chunk) blocks.
template <int CHUNK> __device__ bool block_span(const AdamBatch& b, Span* s) {
    i64 first = 0, prev = 0;
    for (int t = 0; t < b.n; ++t) {
        i64 len = b.ends[t] - prev;
        i64 nb = (len + CHUNK - 1) / CHUNK;
        if ((i64)blockIdx.x < first + nb) {
            s->t = t;
            s->begin = ((i64)blockIdx.x - first) * CHUNK;
            s->end = s->begin + CHUNK < len ? s->begin + CHUNK : len;
            return true;
        }
        first += nb;
        prev = b.ends[t];
    }
    return false;
}
__device__ __forceinline__ bool aligned16(u64 p) { return (p & 15) == 0; }

// Calls f(j) for every element j of the block's span, and fp(j) for whole packs of P
// elements starting at j where `packs` allows (the tail and unaligned tensors go one by one).
template <int P, typename F, typename FP>
__device__ __forceinline__ void span_loop(const Span& s, bool packs, F f, FP fp) {
    if (packs) {
        for (i64 j = s.begin + (i64)threadIdx.x * P; j < s.end; j += (i64)blockDim.x * P) {
            if (j + P <= s.end) {
                fp(j);
            } else {
                for (i64 q = j; q < s.end; ++q) f(q);
            }
        }
    } else {
        for (i64 j = s.begin + threadIdx.x; j < s.end; j += blockDim.x) f(j);
    }
}

// Adam in the parameters' arithmetic type (f32 for f32 and half tensors, f64 for f64), as
// PyTorch's fused AdamW does.
template <typename T>
__device__ void adam_impl(const AdamBatch& b, AdamConsts kc) {
    typedef typename Num<T>::acc A;
    const int P = PackWidth<T, T>::P;
    Span s;
    if (!block_span<OPTIM_CHUNK>(b, &s)) return;
    T* __restrict__ p = (T*)b.ptrs[ADAM_WIDTH * s.t];
    T* __restrict__ m = (T*)b.ptrs[ADAM_WIDTH * s.t + 1];
    T* __restrict__ v = (T*)b.ptrs[ADAM_WIDTH * s.t + 2];
    const T* __restrict__ g = (const T*)b.ptrs[ADAM_WIDTH * s.t + 3];
    const u64 h = b.ptrs[ADAM_WIDTH * s.t + 4];
    const int half = kc.half;
    const A beta1 = (A)kc.beta1, beta2 = (A)kc.beta2, eps = (A)kc.eps, wd = (A)kc.weight_decay,
            decay = (A)kc.decay, step = (A)kc.step_size, bc2 = (A)kc.bc2_sqrt;
    const bool decoupled = kc.decoupled;
    const A gs = kc.gscale ? (A)(*(const double*)kc.gscale) : (A)1;
    auto one = [&](A pf, A gf, A mf, A vf, A* po, A* mo, A* vo) {
        gf *= gs;
        if (decoupled) pf *= decay; else gf += wd * pf;
        mf = beta1 * mf + ((A)1 - beta1) * gf;
        vf = beta2 * vf + ((A)1 - beta2) * gf * gf;
        A denom = sqrt(vf) / bc2 + eps;
        *po = pf - step * mf / denom;
        *mo = mf;
        *vo = vf;
    };
    auto f = [&](i64 j) {
        A po, mo, vo;
        one(Num<T>::ld(p[j]), Num<T>::ld(g[j]), Num<T>::ld(m[j]), Num<T>::ld(v[j]), &po, &mo, &vo);
        p[j] = Num<T>::st(po);
        m[j] = Num<T>::st(mo);
        v[j] = Num<T>::st(vo);
        if (h) ((unsigned short*)h)[j] = half_bits(Num<T>::ld(p[j]), half);
    };
    auto fp = [&](i64 j) {
        typedef Pack<T, P> V;
        V pp = *(const V*)(p + j), gg = *(const V*)(g + j), mm = *(const V*)(m + j),
          vv = *(const V*)(v + j);
        // The shadow's P elements, written as one store (2·P bytes, aligned where `h` is
        // 16-byte aligned: j is a multiple of P).
        Pack<unsigned short, P> hh;
#pragma unroll
        for (int k = 0; k < P; ++k) {
            A po, mo, vo;
            one(Num<T>::ld(pp.v[k]), Num<T>::ld(gg.v[k]), Num<T>::ld(mm.v[k]), Num<T>::ld(vv.v[k]),
                &po, &mo, &vo);
            pp.v[k] = Num<T>::st(po);
            mm.v[k] = Num<T>::st(mo);
            vv.v[k] = Num<T>::st(vo);
            if (h) hh.v[k] = half_bits(Num<T>::ld(pp.v[k]), half);
        }
        *(V*)(p + j) = pp;
        *(V*)(m + j) = mm;
        *(V*)(v + j) = vv;
        if (h) *(Pack<unsigned short, P>*)((unsigned short*)h + j) = hh;
    };
    bool packs = aligned16((u64)p) && aligned16((u64)m) && aligned16((u64)v) &&
                 aligned16((u64)g) && aligned16(h);
    span_loop<P>(s, packs, f, fp);
}

#define ADAM(S, T)                                                                               \
    extern "C" __global__ void adam_##S(AdamBatch b, AdamConsts k) { adam_impl<T>(b, k); }
FOR_FLOATS(ADAM)

// The sum of squares of up to ADAM_MAX tensors in one launch (`ptrs[k]` the k-th tensor,
// `ends` as above), added into the f64 `*out`: squares summed in f64 (a gradient norm as exact
// as the CPU's), per block then across blocks.
template <typename T>
__device__ void sumsq_impl(const AdamBatch& b, double* out) {
    const int P = PackWidth<T, T>::P;
    // Packs each thread loads before it adds any.
    const int U = 4;
    Span s;
    if (!block_span<SUMSQ_CHUNK>(b, &s)) return;  // uniform per block: block_sum below is safe
    const T* x = (const T*)b.ptrs[s.t];
    double acc = 0;
    auto add = [&](T e) {
        double v = Num<T>::to_f64(e);
        acc += v * v;
    };
    if (aligned16((u64)x)) {
        typedef Pack<T, P> V;
        const i64 stride = (i64)blockDim.x * P;
        for (i64 j0 = s.begin + (i64)threadIdx.x * P; j0 < s.end; j0 += stride * U) {
            V pk[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const i64 j = j0 + u * stride;
                if (j + P <= s.end) pk[u] = *(const V*)(x + j);
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const i64 j = j0 + u * stride;
                if (j + P <= s.end) {
#pragma unroll
                    for (int k = 0; k < P; ++k) add(pk[u].v[k]);
                } else {
                    for (i64 q = j; q < s.end; ++q) add(x[q]);
                }
            }
        }
    } else {
        for (i64 j = s.begin + threadIdx.x; j < s.end; j += blockDim.x) add(x[j]);
    }
    double total = block_sum<double>(acc);
    if (threadIdx.x == 0) atomicAdd(out, total);
}

#define SUMSQ(S, T)                                                                              \
    extern "C" __global__ void sumsq_##S(AdamBatch b, double* out) { sumsq_impl<T>(b, out); }
FOR_FLOATS(SUMSQ)

// x *= *coef for up to ADAM_MAX tensors in place (`ptrs[k]`, `ends` as above): gradient
// clipping's scale, read from the device so that nothing comes back to the host.
template <typename T>
__device__ void scale_many_impl(const AdamBatch& b, const double* coef) {
    typedef typename Num<T>::acc A;
    const int P = PackWidth<T, T>::P;
    Span s;
    if (!block_span<OPTIM_CHUNK>(b, &s)) return;
    T* x = (T*)b.ptrs[s.t];
    const A k = (A)(*coef);
    auto f = [&](i64 j) { x[j] = Num<T>::st(Num<T>::ld(x[j]) * k); };
    auto fp = [&](i64 j) {
        Pack<T, P> pk = *(const Pack<T, P>*)(x + j);
#pragma unroll
        for (int q = 0; q < P; ++q) pk.v[q] = Num<T>::st(Num<T>::ld(pk.v[q]) * k);
        *(Pack<T, P>*)(x + j) = pk;
    };
    span_loop<P>(s, aligned16((u64)x), f, fp);
}

#define SCALE_MANY(S, T)                                                                         \
    extern "C" __global__ void scale_many_##S(AdamBatch b, const double* coef) {                \
        scale_many_impl<T>(b, coef);                                                             \
    }
FOR_FLOATS(SCALE_MANY)
