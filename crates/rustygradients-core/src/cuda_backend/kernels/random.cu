// Counter-based random numbers (Philox-4x32 with 10 rounds): element i of a draw with key
// (k0, k1) is a function of (i, key) alone, so results do not depend on the launch shape and
// the same key gives the same numbers on every run.

__device__ __forceinline__ uint4 philox(u64 counter, u32 k0, u32 k1) {
    uint4 c = make_uint4((u32)counter, (u32)(counter >> 32), 0x2545F491u, 0x9E3779B9u);
    for (int r = 0; r < 10; ++r) {
        u32 hi0 = __umulhi(0xD2511F53u, c.x), lo0 = 0xD2511F53u * c.x;
        u32 hi1 = __umulhi(0xCD9E8D57u, c.z), lo1 = 0xCD9E8D57u * c.z;
        c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c;
}
// Uniform in [0, 1) with 24 bits (53 for f64).
__device__ __forceinline__ float u01_f32(u32 a) { return (float)(a >> 8) * 5.9604644775390625e-8f; }
__device__ __forceinline__ double u01_f64(u32 a, u32 b) {
    return ((double)(a >> 5) * 67108864.0 + (double)(b >> 6)) * 1.1102230246251565e-16;
}

template <typename T> __device__ void uniform_impl(T* out, i64 n, u32 k0, u32 k1) {
    GRID_STRIDE(i, n) {
        uint4 r = philox((u64)i, k0, k1);
        if constexpr (sizeof(T) == 8) out[i] = Num<T>::from_f64(u01_f64(r.x, r.y));
        else out[i] = Num<T>::st(u01_f32(r.x));
    }
}
// Box-Muller from two uniforms in (0, 1].
template <typename T> __device__ void normal_impl(T* out, i64 n, u32 k0, u32 k1) {
    GRID_STRIDE(i, n) {
        uint4 r = philox((u64)i, k0, k1);
        if constexpr (sizeof(T) == 8) {
            double u1 = 1.0 - u01_f64(r.x, r.y), u2 = u01_f64(r.z, r.w);
            out[i] = Num<T>::from_f64(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
        } else {
            float u1 = 1.0f - u01_f32(r.x), u2 = u01_f32(r.y);
            out[i] = Num<T>::st(sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2));
        }
    }
}

#define RANDOM(S, T)                                                                             \
    extern "C" __global__ void uniform_##S(T* out, i64 n, u32 k0, u32 k1) {                     \
        uniform_impl<T>(out, n, k0, k1);                                                        \
    }                                                                                           \
    extern "C" __global__ void normal_##S(T* out, i64 n, u32 k0, u32 k1) {                      \
        normal_impl<T>(out, n, k0, k1);                                                         \
    }
FOR_FLOATS(RANDOM)
