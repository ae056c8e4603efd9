// Elementwise kernels: fills, casts, strided copies, unary and binary math, comparisons and
// `where`. Every operand is read through its own layout; outputs are contiguous unless a
// kernel writes into a strided destination (`copy_into`, `add_into`).

template <typename T> __device__ void fill_impl(T* out, i64 n, double v) {
    T x = Num<T>::from_f64(v);
    GRID_STRIDE(i, n) out[i] = x;
}
template <typename T> __device__ void arange_impl(T* out, i64 n, double start, double step) {
    GRID_STRIDE(i, n) out[i] = Num<T>::from_f64(start + (double)i * step);
}
template <typename S, typename D> __device__ D cast_one(S x) {
    return Num<D>::from_f64(Num<S>::to_f64(x));
}
template <typename S, typename D>
__device__ void cast_impl(i64 n, const S* in, Lay l, D* out) {
    GRID_STRIDE(i, n) out[i] = cast_one<S, D>(in[lay_off(l, i)]);
}
template <typename T>
__device__ void copy_impl(i64 n, const T* in, Lay l, T* out, Lay ol) {
    GRID_STRIDE(i, n) out[lay_off(ol, i)] = in[lay_off(l, i)];
}
template <typename T>
__device__ void add_into_impl(i64 n, const T* in, Lay l, T* out, Lay ol) {
    GRID_STRIDE(i, n) {
        i64 o = lay_off(ol, i);
        out[o] = Num<T>::st(Num<T>::ld(out[o]) + Num<T>::ld(in[lay_off(l, i)]));
    }
}

// ---- unary ----------------------------------------------------------------------------------

__device__ __forceinline__ float erf_a(float x) { return erff(x); }
__device__ __forceinline__ double erf_a(double x) { return erf(x); }

template <typename A> __device__ __forceinline__ A unary_float(A x, int op, double p0, double p1) {
    const A one = (A)1, zero = (A)0;
    switch (op) {
        case 0: return -x;
        case 1: return fabs(x);
        case 2: return exp(x);
        case 3: return log(x);
        case 4: return sqrt(x);
        case 5: return one / sqrt(x);
        case 6: return sin(x);
        case 7: return cos(x);
        case 8: return tanh(x);
        case 9: return one / (one + exp(-x));
        case 10: return (x > zero || x != x) ? x : zero;
        case 11: return (A)0.5 * x * (one + erf_a(x * (A)0.70710678118654752440));
        case 12: {
            const A k = (A)0.79788456080286535588, a = (A)0.044715;
            return (A)0.5 * x * (one + tanh(k * (x + a * x * x * x)));
        }
        case 13: return x / (one + exp(-x));
        case 14: return (x > zero ? x : zero) + log1p(exp(-fabs(x)));
        case 15: return x * x;
        case 16: return one / x;
        case 17: return erf_a(x);
        case 18: return x > zero ? one : (x < zero ? -one : x);
        case 19: return pow(x, (A)p0);
        case 20: return x < (A)p0 ? (A)p0 : (x > (A)p1 ? (A)p1 : x);
        case 21: return x * (A)p0 + (A)p1;
        default: return x;
    }
}
// Integer unary ops run in f64 and convert back, as the CPU does.
__device__ double unary_int(double x, int op, double p0, double p1) {
    switch (op) {
        case 0: return -x;
        case 1: return fabs(x);
        case 10: return x > 0.0 ? x : 0.0;
        case 15: return x * x;
        case 18: return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : 0.0);
        case 20: return fmin(fmax(x, p0), p1);
        case 21: return x * p0 + p1;
        default: return x;
    }
}
template <typename T>
__device__ void unary_impl(i64 n, const T* in, Lay l, T* out, int op, double p0, double p1) {
    GRID_STRIDE(i, n) {
        T x = in[lay_off(l, i)];
        if constexpr (Num<T>::is_float) {
            out[i] = Num<T>::st(unary_float<typename Num<T>::acc>(Num<T>::ld(x), op, p0, p1));
        } else {
            out[i] = Num<T>::from_f64(unary_int(Num<T>::to_f64(x), op, p0, p1));
        }
    }
}
// g * op'(x) for GELU (op 11) and tanh-GELU (op 12).
template <typename A> __device__ __forceinline__ A gelu_grad(A x, int op) {
    const A one = (A)1, half = (A)0.5;
    if (op == 11) {
        A cdf = half * (one + erf_a(x * (A)0.70710678118654752440));
        return cdf + x * (A)0.39894228040143267794 * exp(-half * x * x);
    }
    const A k = (A)0.79788456080286535588, a = (A)0.044715;
    A t = tanh(k * (x + a * x * x * x));
    return half * (one + t) + half * x * (one - t * t) * k * (one + (A)3 * a * x * x);
}
template <typename T>
__device__ void unary_grad_impl(i64 n, const T* x, Lay xl, const T* g, Lay gl, T* out, int op) {
    typedef typename Num<T>::acc A;
    GRID_STRIDE(i, n) {
        A xv = Num<T>::ld(x[lay_off(xl, i)]);
        out[i] = Num<T>::st(Num<T>::ld(g[lay_off(gl, i)]) * gelu_grad<A>(xv, op));
    }
}

// ---- binary ---------------------------------------------------------------------------------

template <typename A> __device__ A binary_float(A a, A b, int op) {
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        case 4: return pow(a, b);
        case 5: return a >= b ? a : (b > a ? b : a + b);  // NaN propagates
        case 6: return a <= b ? a : (b < a ? b : a + b);
        default: return a;
    }
}
// Integer arithmetic wraps (computed unsigned); division by zero gives 0, as on the CPU.
template <typename T> __device__ T binary_int(T a, T b, int op) {
    typedef typename Num<T>::acc A;
    A x = Num<T>::ld(a), y = Num<T>::ld(b);
    switch (op) {
        case 0: return Num<T>::st((A)((u64)x + (u64)y));
        case 1: return Num<T>::st((A)((u64)x - (u64)y));
        case 2: return Num<T>::st((A)((u64)x * (u64)y));
        case 3: {
            if (y == 0) return Num<T>::st(0);
            if (sizeof(A) == 8 && (i64)y == -1 && (i64)x == (i64)(-9223372036854775807LL - 1))
                return Num<T>::st(0);
            return Num<T>::st(x / y);
        }
        case 4: return Num<T>::from_f64(pow(Num<T>::to_f64(a), Num<T>::to_f64(b)));
        case 5: return Num<T>::st(x > y ? x : y);
        case 6: return Num<T>::st(x < y ? x : y);
        default: return a;
    }
}
template <typename T>
__device__ void binary_impl(i64 n, const T* a, Lay la, const T* b, Lay lb, T* out, int op) {
    GRID_STRIDE(i, n) {
        T x = a[lay_off(la, i)], y = b[lay_off(lb, i)];
        if constexpr (Num<T>::is_float) {
            out[i] = Num<T>::st(binary_float<typename Num<T>::acc>(Num<T>::ld(x), Num<T>::ld(y), op));
        } else {
            out[i] = binary_int<T>(x, y, op);
        }
    }
}
template <typename T>
__device__ void cmp_impl(i64 n, const T* a, Lay la, const T* b, Lay lb, u8* out, int op) {
    GRID_STRIDE(i, n) {
        typename Num<T>::acc x = Num<T>::ld(a[lay_off(la, i)]), y = Num<T>::ld(b[lay_off(lb, i)]);
        bool r;
        switch (op) {
            case 0: r = x == y; break;
            case 1: r = x != y; break;
            case 2: r = x < y; break;
            case 3: r = x <= y; break;
            case 4: r = x > y; break;
            default: r = x >= y; break;
        }
        out[i] = r ? 1 : 0;
    }
}
template <typename T>
__device__ void where_impl(i64 n, const u8* m, Lay lm, const T* a, Lay la, const T* b, Lay lb, T* out) {
    GRID_STRIDE(i, n) out[i] = m[lay_off(lm, i)] ? a[lay_off(la, i)] : b[lay_off(lb, i)];
}

#define ELEMENTWISE(S, T)                                                                        \
    extern "C" __global__ void fill_##S(T* out, i64 n, double v) { fill_impl<T>(out, n, v); }  \
    extern "C" __global__ void arange_##S(T* out, i64 n, double start, double step) {           \
        arange_impl<T>(out, n, start, step);                                                    \
    }                                                                                           \
    extern "C" __global__ void copy_##S(i64 n, const T* in, Lay l, T* out, Lay ol) {            \
        copy_impl<T>(n, in, l, out, ol);                                                        \
    }                                                                                           \
    extern "C" __global__ void add_into_##S(i64 n, const T* in, Lay l, T* out, Lay ol) {        \
        add_into_impl<T>(n, in, l, out, ol);                                                    \
    }                                                                                           \
    extern "C" __global__ void unary_##S(i64 n, const T* in, Lay l, T* out, int op, double p0,  \
                                         double p1) {                                           \
        unary_impl<T>(n, in, l, out, op, p0, p1);                                               \
    }                                                                                           \
    extern "C" __global__ void binary_##S(i64 n, const T* a, Lay la, const T* b, Lay lb, T* out, \
                                          int op) {                                             \
        binary_impl<T>(n, a, la, b, lb, out, op);                                               \
    }                                                                                           \
    extern "C" __global__ void cmp_##S(i64 n, const T* a, Lay la, const T* b, Lay lb, u8* out,  \
                                       int op) {                                                \
        cmp_impl<T>(n, a, la, b, lb, out, op);                                                  \
    }                                                                                           \
    extern "C" __global__ void where_##S(i64 n, const u8* m, Lay lm, const T* a, Lay la,        \
                                         const T* b, Lay lb, T* out) {                          \
        where_impl<T>(n, m, lm, a, la, b, lb, out);                                             \
    }
FOR_ALL(ELEMENTWISE)

#define UNARY_GRAD(S, T)                                                                         \
    extern "C" __global__ void unary_grad_##S(i64 n, const T* x, Lay xl, const T* g, Lay gl,    \
                                              T* out, int op) {                                 \
        unary_grad_impl<T>(n, x, xl, g, gl, out, op);                                           \
    }
FOR_FLOATS(UNARY_GRAD)

#define CAST_TO(S, T, DS, D)                                                                     \
    extern "C" __global__ void cast_##S##_##DS(i64 n, const T* in, Lay l, D* out) {             \
        cast_impl<T, D>(n, in, l, out);                                                         \
    }
#define CAST_FROM(S, T)                                                                          \
    CAST_TO(S, T, f32, float) CAST_TO(S, T, f64, double) CAST_TO(S, T, f16, f16)               \
    CAST_TO(S, T, bf16, bf16) CAST_TO(S, T, i64, i64) CAST_TO(S, T, u32, u32) CAST_TO(S, T, u8, u8)
FOR_ALL(CAST_FROM)

// ---- contiguous, vectorised ------------------------------------------------------------------
// The same ops over contiguous operands whose addresses are aligned to a whole pack: each thread
// moves `P` elements (16 bytes of the widest type) per load and store, and the last `n % P`
// elements are done one by one by the first threads of block 0. The host checks alignment.

#define TAIL(i, n, packs, P)                                                                       \
    for (i64 i = (packs) * (P) + threadIdx.x; blockIdx.x == 0 && i < (n); i += blockDim.x)

template <typename T>
__device__ __forceinline__ void binary_vec_impl(i64 n, const T* a, const T* b, T* out, int op) {
    typedef typename Num<T>::acc A;
    const int P = PackWidth<T, T>::P;
    const i64 packs = n / P;
    GRID_STRIDE(p, packs) {
        Pack<T, P> x = ((const Pack<T, P>*)a)[p], y = ((const Pack<T, P>*)b)[p], r;
#pragma unroll
        for (int k = 0; k < P; ++k)
            r.v[k] = Num<T>::st(binary_float<A>(Num<T>::ld(x.v[k]), Num<T>::ld(y.v[k]), op));
        ((Pack<T, P>*)out)[p] = r;
    }
    TAIL(i, n, packs, P) out[i] = Num<T>::st(binary_float<A>(Num<T>::ld(a[i]), Num<T>::ld(b[i]), op));
}
template <typename T> __device__ __forceinline__ void add_into_vec_impl(i64 n, const T* in, T* out) {
    const int P = PackWidth<T, T>::P;
    const i64 packs = n / P;
    GRID_STRIDE(p, packs) {
        Pack<T, P> x = ((const Pack<T, P>*)in)[p], r = ((Pack<T, P>*)out)[p];
#pragma unroll
        for (int k = 0; k < P; ++k) r.v[k] = Num<T>::st(Num<T>::ld(r.v[k]) + Num<T>::ld(x.v[k]));
        ((Pack<T, P>*)out)[p] = r;
    }
    TAIL(i, n, packs, P) out[i] = Num<T>::st(Num<T>::ld(out[i]) + Num<T>::ld(in[i]));
}
template <typename T>
__device__ __forceinline__ void unary_vec_impl(i64 n, const T* in, T* out, int op, double p0, double p1) {
    typedef typename Num<T>::acc A;
    const int P = PackWidth<T, T>::P;
    const i64 packs = n / P;
    GRID_STRIDE(p, packs) {
        Pack<T, P> x = ((const Pack<T, P>*)in)[p], r;
#pragma unroll
        for (int k = 0; k < P; ++k) r.v[k] = Num<T>::st(unary_float<A>(Num<T>::ld(x.v[k]), op, p0, p1));
        ((Pack<T, P>*)out)[p] = r;
    }
    TAIL(i, n, packs, P) out[i] = Num<T>::st(unary_float<A>(Num<T>::ld(in[i]), op, p0, p1));
}
template <typename T>
__device__ __forceinline__ void unary_grad_vec_impl(i64 n, const T* x, const T* g, T* out, int op) {
    typedef typename Num<T>::acc A;
    const int P = PackWidth<T, T>::P;
    const i64 packs = n / P;
    GRID_STRIDE(p, packs) {
        Pack<T, P> xv = ((const Pack<T, P>*)x)[p], gv = ((const Pack<T, P>*)g)[p], r;
#pragma unroll
        for (int k = 0; k < P; ++k)
            r.v[k] = Num<T>::st(Num<T>::ld(gv.v[k]) * gelu_grad<A>(Num<T>::ld(xv.v[k]), op));
        ((Pack<T, P>*)out)[p] = r;
    }
    TAIL(i, n, packs, P) out[i] = Num<T>::st(Num<T>::ld(g[i]) * gelu_grad<A>(Num<T>::ld(x[i]), op));
}
template <typename S, typename D> __device__ __forceinline__ void cast_vec_impl(i64 n, const S* in, D* out) {
    const int P = PackWidth<S, D>::P;
    const i64 packs = n / P;
    GRID_STRIDE(p, packs) {
        Pack<S, P> x = ((const Pack<S, P>*)in)[p];
        Pack<D, P> r;
#pragma unroll
        for (int k = 0; k < P; ++k) r.v[k] = cast_one<S, D>(x.v[k]);
        ((Pack<D, P>*)out)[p] = r;
    }
    TAIL(i, n, packs, P) out[i] = cast_one<S, D>(in[i]);
}

#define ELEMENTWISE_VEC(S, T)                                                                     \
    extern "C" __global__ void binary_vec_##S(i64 n, const T* a, const T* b, T* out, int op) {   \
        binary_vec_impl<T>(n, a, b, out, op);                                                    \
    }                                                                                            \
    extern "C" __global__ void add_into_vec_##S(i64 n, const T* in, T* out) {                    \
        add_into_vec_impl<T>(n, in, out);                                                        \
    }                                                                                            \
    extern "C" __global__ void unary_vec_##S(i64 n, const T* in, T* out, int op, double p0,      \
                                             double p1) {                                        \
        unary_vec_impl<T>(n, in, out, op, p0, p1);                                               \
    }                                                                                            \
    /* GELU's two forms with the op fixed at compile time (no switch in the loop). */            \
    extern "C" __global__ void unary_vec_gelu_##S(i64 n, const T* in, T* out) {                  \
        unary_vec_impl<T>(n, in, out, 11, 0.0, 0.0);                                             \
    }                                                                                            \
    extern "C" __global__ void unary_vec_gelu_tanh_##S(i64 n, const T* in, T* out) {             \
        unary_vec_impl<T>(n, in, out, 12, 0.0, 0.0);                                             \
    }                                                                                            \
    extern "C" __global__ void unary_grad_vec_gelu_##S(i64 n, const T* x, const T* g, T* out) {  \
        unary_grad_vec_impl<T>(n, x, g, out, 11);                                                \
    }                                                                                            \
    extern "C" __global__ void unary_grad_vec_gelu_tanh_##S(i64 n, const T* x, const T* g,       \
                                                            T* out) {                            \
        unary_grad_vec_impl<T>(n, x, g, out, 12);                                                \
    }
FOR_FLOATS(ELEMENTWISE_VEC)

#define CAST_VEC(S, T, DS, D)                                                                     \
    extern "C" __global__ void cast_vec_##S##_##DS(i64 n, const T* in, D* out) {                 \
        cast_vec_impl<T, D>(n, in, out);                                                         \
    }
CAST_VEC(f32, float, bf16, bf16) CAST_VEC(bf16, bf16, f32, float)
CAST_VEC(f32, float, f16, f16) CAST_VEC(f16, f16, f32, float)

// Copy or add between two `rows × cols` matrices whose rows are contiguous but spaced by their
// own strides (a slice of the last dim, as a fused qkv projection's gradient is assembled from
// q, k and v): packs of P elements, `cols` and both row strides a whole number of packs.
template <typename T, bool ADD>
__device__ __forceinline__ void rows_vec_impl(i64 rows, i64 cols, const T* src, i64 srs, T* dst,
                                              i64 drs) {
    const int P = PackWidth<T, T>::P;
    const i64 per_row = cols / P;
    GRID_STRIDE(i, rows * per_row) {
        i64 r = i / per_row, c = (i - r * per_row) * P;
        Pack<T, P> s = *(const Pack<T, P>*)(src + r * srs + c);
        Pack<T, P>* d = (Pack<T, P>*)(dst + r * drs + c);
        if (ADD) {
            Pack<T, P> o = *d;
#pragma unroll
            for (int k = 0; k < P; ++k) s.v[k] = Num<T>::st(Num<T>::ld(o.v[k]) + Num<T>::ld(s.v[k]));
        }
        *d = s;
    }
}
#define ROWS_VEC(S, T)                                                                            \
    extern "C" __global__ void copy_rows_vec_##S(i64 rows, i64 cols, const T* src, i64 srs,      \
                                                 T* dst, i64 drs) {                              \
        rows_vec_impl<T, false>(rows, cols, src, srs, dst, drs);                                 \
    }                                                                                            \
    extern "C" __global__ void add_into_rows_vec_##S(i64 rows, i64 cols, const T* src, i64 srs,  \
                                                     T* dst, i64 drs) {                          \
        rows_vec_impl<T, true>(rows, cols, src, srs, dst, drs);                                  \
    }
FOR_FLOATS(ROWS_VEC)
