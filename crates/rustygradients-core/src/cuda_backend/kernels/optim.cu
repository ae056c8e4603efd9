// The fused Adam/AdamW step, in place, computed in f64 as on the CPU. One launch updates up to
// ADAM_MAX parameters: `ptrs` holds, per tensor, the device addresses of parameter, first
// moment, second moment and gradient, and `ends` the running element counts (tensor k covers
// ends[k-1] .. ends[k] of the flattened range). The batch is passed by value: no upload.

#define ADAM_MAX 32
struct AdamBatch {
    u64 ptrs[4 * ADAM_MAX];
    i64 ends[ADAM_MAX];
    int n;
};

struct AdamConsts {
    double beta1, beta2, eps, weight_decay, decay, step_size, bc2_sqrt;
    int decoupled;
};

template <typename T>
__device__ void adam_impl(const AdamBatch& b, AdamConsts k) {
    const u64* ptrs = b.ptrs;
    const i64* ends = b.ends;
    int n_tensors = b.n;
    i64 total = ends[n_tensors - 1];
    GRID_STRIDE(i, total) {
        // A short binary search for the tensor holding element i.
        int lo = 0, hi = n_tensors - 1;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (ends[mid] > i) hi = mid; else lo = mid + 1;
        }
        int t = lo;
        i64 j = i - (t == 0 ? 0 : ends[t - 1]);
        T* p = (T*)ptrs[4 * t];
        T* m = (T*)ptrs[4 * t + 1];
        T* v = (T*)ptrs[4 * t + 2];
        const T* g = (const T*)ptrs[4 * t + 3];
        double pf = Num<T>::to_f64(p[j]), gf = Num<T>::to_f64(g[j]);
        if (k.decoupled) pf *= k.decay; else gf += k.weight_decay * pf;
        double mf = k.beta1 * Num<T>::to_f64(m[j]) + (1.0 - k.beta1) * gf;
        double vf = k.beta2 * Num<T>::to_f64(v[j]) + (1.0 - k.beta2) * gf * gf;
        double denom = sqrt(vf) / k.bc2_sqrt + k.eps;
        p[j] = Num<T>::from_f64(pf - k.step_size * mf / denom);
        m[j] = Num<T>::from_f64(mf);
        v[j] = Num<T>::from_f64(vf);
    }
}

#define ADAM(S, T)                                                                               \
    extern "C" __global__ void adam_##S(AdamBatch b, AdamConsts k) { adam_impl<T>(b, k); }
FOR_FLOATS(ADAM)

// The sum of squares of up to ADAM_MAX tensors in one launch (`ptrs[k]` the k-th tensor,
// `ends` as above), added into the f64 `*out`: f32 partial sums per thread, f64 per block.
template <typename T>
__device__ void sumsq_impl(const AdamBatch& b, double* out) {
    const i64* ends = b.ends;
    int n_tensors = b.n;
    i64 total = ends[n_tensors - 1];
    double acc = 0.0;
    GRID_STRIDE(i, total) {
        int lo = 0, hi = n_tensors - 1;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (ends[mid] > i) hi = mid; else lo = mid + 1;
        }
        i64 j = i - (lo == 0 ? 0 : ends[lo - 1]);
        double v = Num<T>::to_f64(((const T*)b.ptrs[lo])[j]);
        acc += v * v;
    }
    acc = block_sum<double>(acc);
    if (threadIdx.x == 0) atomicAdd(out, acc);
}

#define SUMSQ(S, T)                                                                              \
    extern "C" __global__ void sumsq_##S(AdamBatch b, double* out) { sumsq_impl<T>(b, out); }
FOR_FLOATS(SUMSQ)

// x *= *coef for up to ADAM_MAX tensors in place (`ptrs[k]`, `ends` as above): gradient
// clipping's scale, read from the device so that nothing comes back to the host.
template <typename T>
__device__ void scale_many_impl(const AdamBatch& b, const double* coef) {
    const i64* ends = b.ends;
    int n_tensors = b.n;
    i64 total = ends[n_tensors - 1];
    typename Num<T>::acc k = (typename Num<T>::acc)(*coef);
    GRID_STRIDE(i, total) {
        int lo = 0, hi = n_tensors - 1;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (ends[mid] > i) hi = mid; else lo = mid + 1;
        }
        i64 j = i - (lo == 0 ? 0 : ends[lo - 1]);
        T* x = (T*)b.ptrs[lo];
        x[j] = Num<T>::st(Num<T>::ld(x[j]) * k);
    }
}

#define SCALE_MANY(S, T)                                                                         \
    extern "C" __global__ void scale_many_##S(AdamBatch b, const double* coef) {                \
        scale_many_impl<T>(b, coef);                                                             \
    }
FOR_FLOATS(SCALE_MANY)
