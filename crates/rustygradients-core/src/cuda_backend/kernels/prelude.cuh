// Shared by every kernel module: element types, conversions and strided layouts.
// Compiled by NVRTC at run time, with no system headers.

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned char u8;

#define MAX_DIMS 8
#define INFINITY __int_as_float(0x7f800000)

// A strided layout (see layout.rs): `rank` dims after merging, or `contiguous` for offset + i.
// `small`: every dim and the element count fit in 31 bits, so positions divide in 32 bits.
struct Lay {
    int rank;
    int contiguous;
    int small;
    int pad;
    i64 offset;
    i64 dims[MAX_DIMS];
    i64 strides[MAX_DIMS];
};

// Storage offset of the i-th element in row-major order.
__device__ __forceinline__ i64 lay_off(const Lay& l, i64 i) {
    if (l.contiguous) return l.offset + i;
    i64 off = l.offset;
    if (l.small) {
        // 32-bit division is several times cheaper than 64-bit on the GPU.
        u32 u = (u32)i;
        for (int d = l.rank - 1; d >= 0; --d) {
            u32 n = (u32)l.dims[d];
            off += (i64)(u % n) * l.strides[d];
            u /= n;
        }
        return off;
    }
    for (int d = l.rank - 1; d >= 0; --d) {
        i64 n = l.dims[d];
        off += (i % n) * l.strides[d];
        i /= n;
    }
    return off;
}

#define GRID_STRIDE(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// 16-bit floats are kept as raw bits; arithmetic happens in f32.
struct f16 { unsigned short x; };
struct bf16 { unsigned short x; };

__device__ __forceinline__ float f16_to_f32(f16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.x));
    return f;
}
__device__ __forceinline__ f16 f32_to_f16(float f) {
    f16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.x) : "f"(f));
    return h;
}
__device__ __forceinline__ f16 f64_to_f16(double d) {
    f16 h;
    asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h.x) : "d"(d));
    return h;
}
__device__ __forceinline__ float bf16_to_f32(bf16 b) {
    return __uint_as_float(((u32)b.x) << 16);
}
__device__ __forceinline__ bf16 f32_to_bf16(float f) {
    bf16 b;
#if __CUDA_ARCH__ >= 800
    // One instruction (round to nearest even; NaN stays NaN).
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b.x) : "f"(f));
#else
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        b.x = (unsigned short)((u >> 16) | 0x40);  // quiet NaN
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);            // round to nearest even
        b.x = (unsigned short)(u >> 16);
    }
#endif
    return b;
}

// Num<T>: the type arithmetic runs in (`acc`), and loads/stores to it. Integers run in their
// own type; conversions from f64 follow Rust's `as`: truncate toward zero, saturate, NaN -> 0.
template <typename T> struct Num;
template <> struct Num<float> {
    typedef float acc;
    static const bool is_float = true;
    __device__ static float ld(float v) { return v; }
    __device__ static float st(float v) { return v; }
    __device__ static double to_f64(float v) { return v; }
    __device__ static float from_f64(double v) { return (float)v; }
};
template <> struct Num<double> {
    typedef double acc;
    static const bool is_float = true;
    __device__ static double ld(double v) { return v; }
    __device__ static double st(double v) { return v; }
    __device__ static double to_f64(double v) { return v; }
    __device__ static double from_f64(double v) { return v; }
};
template <> struct Num<f16> {
    typedef float acc;
    static const bool is_float = true;
    __device__ static float ld(f16 v) { return f16_to_f32(v); }
    __device__ static f16 st(float v) { return f32_to_f16(v); }
    __device__ static double to_f64(f16 v) { return f16_to_f32(v); }
    __device__ static f16 from_f64(double v) { return f64_to_f16(v); }
};
template <> struct Num<bf16> {
    typedef float acc;
    static const bool is_float = true;
    __device__ static float ld(bf16 v) { return bf16_to_f32(v); }
    __device__ static bf16 st(float v) { return f32_to_bf16(v); }
    __device__ static double to_f64(bf16 v) { return bf16_to_f32(v); }
    __device__ static bf16 from_f64(double v) { return f32_to_bf16((float)v); }
};
__device__ __forceinline__ double sat(double v, double lo, double hi) {
    if (v != v) return 0.0;
    v = trunc(v);
    return v < lo ? lo : (v > hi ? hi : v);
}
template <> struct Num<i64> {
    typedef i64 acc;
    static const bool is_float = false;
    __device__ static i64 ld(i64 v) { return v; }
    __device__ static i64 st(i64 v) { return v; }
    __device__ static double to_f64(i64 v) { return (double)v; }
    __device__ static i64 from_f64(double v) {
        if (v != v) return 0;
        if (v >= 9223372036854775807.0) return 9223372036854775807LL;
        if (v <= -9223372036854775808.0) return (i64)(-9223372036854775807LL - 1);
        return (i64)v;
    }
};
template <> struct Num<u32> {
    typedef u32 acc;
    static const bool is_float = false;
    __device__ static u32 ld(u32 v) { return v; }
    __device__ static u32 st(u32 v) { return v; }
    __device__ static double to_f64(u32 v) { return (double)v; }
    __device__ static u32 from_f64(double v) { return (u32)sat(v, 0.0, 4294967295.0); }
};
template <> struct Num<u8> {
    typedef u32 acc;
    static const bool is_float = false;
    __device__ static u32 ld(u8 v) { return v; }
    __device__ static u8 st(u32 v) { return (u8)v; }
    __device__ static double to_f64(u8 v) { return (double)v; }
    __device__ static u8 from_f64(double v) { return (u8)sat(v, 0.0, 255.0); }
};

// `P` elements moved as one aligned load or store (16 bytes for the vectorised kernels).
template <typename T, int P> struct alignas(sizeof(T) * P) Pack { T v[P]; };
template <typename A, typename B> struct PackWidth {
    static const int P = 16 / (sizeof(A) > sizeof(B) ? sizeof(A) : sizeof(B));
};

// Instantiates `MACRO(name_suffix, type)` for every dtype, or for the float dtypes.
#define FOR_ALL(M) M(f32, float) M(f64, double) M(f16, f16) M(bf16, bf16) M(i64, i64) M(u32, u32) M(u8, u8)
#define FOR_FLOATS(M) M(f32, float) M(f64, double) M(f16, f16) M(bf16, bf16)

// A kernel that reads a bad index records it here (first one wins) instead of faulting;
// the host checks at its next synchronisation. [0] = op code, [1] = index, [2] = size.
__device__ __forceinline__ void report_bad_index(i64* err, i64 code, i64 index, i64 size) {
    if (atomicCAS((u64*)err, 0ull, (u64)code) == 0ull) {
        err[1] = index;
        err[2] = size;
    }
}

// 2^x on the special-function unit, subnormal results flushed to zero (one instruction;
// exp2f's IEEE handling of subnormals costs three more per element).
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ double ex2(double x) { return exp2(x); }

// Block-wide sum of `v` (all threads get the result); `blockDim.x` a multiple of 32, <= 1024.
template <typename A> __device__ A block_sum(A v) {
    __shared__ A partial[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    int nw = blockDim.x >> 5;
    v = lane < nw ? partial[lane] : (A)0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// Block-wide maximum (NaN wins).
template <typename A> __device__ A block_max(A v) {
    __shared__ A partial[32];
    for (int o = 16; o > 0; o >>= 1) {
        A w = __shfl_xor_sync(0xffffffffu, v, o);
        v = (w > v || w != w) ? w : v;
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    int nw = blockDim.x >> 5;
    v = lane < nw ? partial[lane] : partial[0];
    for (int o = 16; o > 0; o >>= 1) {
        A w = __shfl_xor_sync(0xffffffffu, v, o);
        v = (w > v || w != w) ? w : v;
    }
    return v;
}
