// Indexing: index_select, gather and scatter_add with i64 indices. A bad index is recorded with
// report_bad_index (op codes 1 index_select, 2 gather, 3 scatter_add) and reads as 0 / is
// skipped, so the kernel never touches memory outside its tensors.

// out (outer, n_ids, inner) = x[(outer, ids[j], inner)] over x's logical (outer, size, inner).
template <typename T>
__device__ void index_select_impl(i64 n, const T* x, Lay lx, const i64* ids, i64 n_ids, i64 size,
                                  i64 inner, T* out, i64* err) {
    GRID_STRIDE(i, n) {
        i64 b = i % inner, j = (i / inner) % n_ids, a = i / (inner * n_ids);
        i64 id = ids[j];
        if (id < 0 || id >= size) {
            report_bad_index(err, 1, id, size);
            out[i] = Num<T>::st(0);
            continue;
        }
        out[i] = x[lay_off(lx, (a * size + id) * inner + b)];
    }
}

// Offsets into x (layout lx, exact dims) and into a second tensor (layout lo) of the element
// at row-major position i of `shape` (rank `rank`), with the index along `dim` replaced by
// `id` for x.
__device__ __forceinline__ void gather_offsets(i64 i, const Lay& shape, const Lay& lx, const Lay& lo,
                                               int dim, i64* id_pos, i64* x_base, i64* o_off) {
    i64 xo = lx.offset, oo = lo.offset;
    for (int d = shape.rank - 1; d >= 0; --d) {
        i64 k = i % shape.dims[d];
        i /= shape.dims[d];
        if (d != dim) xo += k * lx.strides[d];
        oo += k * lo.strides[d];
    }
    *x_base = xo;
    *o_off = oo;
    *id_pos = 0;
}

// out[i] = x[.., ids[i], ..] along `dim`; `li` is the ids' layout (exact dims), out contiguous.
template <typename T>
__device__ void gather_impl(i64 n, const T* x, Lay lx, const i64* ids, Lay li, int dim, T* out,
                            i64* err) {
    GRID_STRIDE(i, n) {
        i64 xb, io, unused;
        gather_offsets(i, li, lx, li, dim, &unused, &xb, &io);
        i64 id = ids[io], size = lx.dims[dim];
        if (id < 0 || id >= size) {
            report_bad_index(err, 2, id, size);
            out[i] = Num<T>::st(0);
            continue;
        }
        out[i] = x[xb + id * lx.strides[dim]];
    }
}

__device__ __forceinline__ void atomic_add_elem(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add_elem(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add_elem(i64* p, i64 v) { atomicAdd((u64*)p, (u64)v); }
__device__ __forceinline__ void atomic_add_elem(u32* p, u32 v) { atomicAdd(p, v); }
// 8- and 16-bit elements: compare-and-swap on the aligned 32-bit word that holds them.
template <typename T> __device__ void atomic_add_small(T* p, typename Num<T>::acc v) {
    u64 addr = (u64)p;
    u32* word = (u32*)(addr & ~3ull);
    u32 shift = (u32)(addr & 3ull) * 8;
    u32 mask = (sizeof(T) == 1 ? 0xffu : 0xffffu) << shift;
    u32 old = *word, assumed;
    do {
        assumed = old;
        T cur;
        if (sizeof(T) == 1) *(u8*)&cur = (u8)((assumed & mask) >> shift);
        else *(unsigned short*)&cur = (unsigned short)((assumed & mask) >> shift);
        T next = Num<T>::st(Num<T>::ld(cur) + v);
        u32 bits = sizeof(T) == 1 ? (u32)*(u8*)&next : (u32)*(unsigned short*)&next;
        old = atomicCAS(word, assumed, (assumed & ~mask) | (bits << shift));
    } while (old != assumed);
}
__device__ __forceinline__ void atomic_add_elem(f16* p, float v) { atomic_add_small<f16>(p, v); }
__device__ __forceinline__ void atomic_add_elem(bf16* p, float v) { atomic_add_small<bf16>(p, v); }
__device__ __forceinline__ void atomic_add_elem(u8* p, u32 v) { atomic_add_small<u8>(p, v); }

// out (a contiguous copy of the input, layout lout) [.., ids[i], ..] += src[i] along `dim`.
template <typename T>
__device__ void scatter_add_impl(i64 n, T* out, Lay lout, const i64* ids, Lay li, const T* src,
                                 Lay ls, int dim, i64* err) {
    GRID_STRIDE(i, n) {
        i64 ob, io, so, unused;
        gather_offsets(i, li, lout, li, dim, &unused, &ob, &io);
        gather_offsets(i, li, ls, ls, -1, &unused, &so, &so);
        i64 id = ids[io], size = lout.dims[dim];
        if (id < 0 || id >= size) {
            report_bad_index(err, 3, id, size);
            continue;
        }
        atomic_add_elem(out + ob + id * lout.strides[dim], Num<T>::ld(src[so]));
    }
}

#define INDEXING(S, T)                                                                           \
    extern "C" __global__ void index_select_##S(i64 n, const T* x, Lay lx, const i64* ids,      \
                                                i64 n_ids, i64 size, i64 inner, T* out,         \
                                                i64* err) {                                     \
        index_select_impl<T>(n, x, lx, ids, n_ids, size, inner, out, err);                      \
    }                                                                                           \
    extern "C" __global__ void gather_##S(i64 n, const T* x, Lay lx, const i64* ids, Lay li,    \
                                          int dim, T* out, i64* err) {                          \
        gather_impl<T>(n, x, lx, ids, li, dim, out, err);                                       \
    }                                                                                           \
    extern "C" __global__ void scatter_add_##S(i64 n, T* out, Lay lout, const i64* ids, Lay li, \
                                               const T* src, Lay ls, int dim, i64* err) {       \
        scatter_add_impl<T>(n, out, lout, ids, li, src, ls, dim, err);                          \
    }
FOR_ALL(INDEXING)
