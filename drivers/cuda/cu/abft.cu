// The verified burn's device side (drivers/cuda/compute.py): exact operands, and the check of
// every product against its ABFT row checksums (Huang and Abraham) and, on a schedule, against
// the exact reference bit for bit. See drivers/abft.py for why the arithmetic is exact.
//
// A check reads the product once (16-byte loads), sums each row in float64 (exact: every
// result is an integer below 2^22) and tests every element for an integral finite value; only
// a row that fails is compared with the reference element by element, and only then are wrong
// elements counted and recorded. Nothing goes back to the host per product: counts land in a
// small report that the host copies once per batch.

typedef unsigned long long u64;
#define FLAGS 3  // per product: bad rows, wrong elements, wrong elements that are NaN/Inf
#define REC 5    // per record: product slot, row, column, bits got, bits wanted

// --- operands: integers in [1, s] from a counter-based hash, so a seed gives the same matrix
// on every card and in every process, with no random-number library
__device__ __forceinline__ u64 mix(u64 x) {  // splitmix64's finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

__device__ __forceinline__ unsigned entry(u64 i, u64 seed, unsigned s) {
    return 1u + (unsigned)(mix(seed * 0x9e3779b97f4a7c15ull + i) % s);
}

// a small positive integer's binary16 bits (exact: s <= 2048)
__device__ __forceinline__ unsigned short half_bits(unsigned v) {
    const unsigned f = __float_as_uint((float)v);
    return (unsigned short)(((((f >> 23) & 0xffu) - 112u) << 10) | ((f >> 13) & 0x3ffu));
}

extern "C" __global__ void operands_f16(unsigned short* out, double* out64, u64 count, u64 seed, unsigned s) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (u64)gridDim.x * blockDim.x) {
        const unsigned v = entry(i, seed, s);
        out[i] = half_bits(v);
        out64[i] = (double)v;
    }
}

extern "C" __global__ void operands_bf16(unsigned short* out, double* out64, u64 count, u64 seed, unsigned s) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (u64)gridDim.x * blockDim.x) {
        const unsigned v = entry(i, seed, s);
        out[i] = (unsigned short)(__float_as_uint((float)v) >> 16);  // exact for s <= 256
        out64[i] = (double)v;
    }
}

extern "C" __global__ void operands_f32(float* out, double* out64, u64 count, u64 seed, unsigned s) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (u64)gridDim.x * blockDim.x) {
        const unsigned v = entry(i, seed, s);
        out[i] = (float)v;
        out64[i] = (double)v;
    }
}

extern "C" __global__ void operands_f64(double* out64, u64 count, u64 seed, unsigned s) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (u64)gridDim.x * blockDim.x)
        out64[i] = (double)entry(i, seed, s);
}

// --- the check -------------------------------------------------------------------------------
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ u64 warp_sum(u64 v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ u64 bits_of(float x) { return (u64)__float_as_uint(x); }
__device__ __forceinline__ u64 bits_of(double x) { return (u64)__double_as_longlong(x); }

// one row of the product against the reference: wrong elements counted, the first few recorded
template <typename T>
__device__ void compare_row(const T* row, const T* want, u64 n, u64 r, u64 slot, u64& wrong, u64& nonfinite,
                            u64* rec, u64 rec_cap) {
    for (u64 j = threadIdx.x; j < n; j += blockDim.x) {
        const T x = row[j], w = want[j];
        if (bits_of(x) == bits_of(w)) continue;
        ++wrong;
        nonfinite += !isfinite(x);
        const u64 i = atomicAdd(&rec[0], 1ull);
        if (i < rec_cap) {
            u64* e = rec + 1 + REC * i;
            e[0] = slot;
            e[1] = r;
            e[2] = j;
            e[3] = bits_of(x);
            e[4] = bits_of(w);
        }
    }
}

// T: the result type; V: T's 16-byte vector; W: elements per vector
template <typename T, typename V, int W>
__device__ void check(const T* c, const T* ref, const double* rows, u64 n, int full, u64* flags, u64 slot,
                      u64* rec, u64 rec_cap) {
    __shared__ double s_sum[32];
    __shared__ u64 s_bad[32];
    __shared__ int s_row_bad;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    const bool vectors = n % W == 0;  // rows start 16-byte aligned: load W elements at a time
    for (u64 r = blockIdx.x; r < n; r += gridDim.x) {
        const T* row = c + r * n;
        const T* want = ref + r * n;
        double sum = 0.0;
        u64 odd = 0;  // elements that are not integral and finite
        if (vectors) {
            const V* rv = (const V*)row;
            for (u64 j = threadIdx.x; j < n / W; j += blockDim.x) {
                const V v = __ldcs(rv + j);  // read once: do not keep it in L2
                const T* x = (const T*)&v;
#pragma unroll
                for (int k = 0; k < W; ++k) {
                    sum += (double)x[k];
                    odd += !(isfinite(x[k]) && x[k] == rint(x[k]));
                }
            }
        } else {
            for (u64 j = threadIdx.x; j < n; j += blockDim.x) {
                const T x = row[j];
                sum += (double)x;
                odd += !(isfinite(x) && x == rint(x));
            }
        }
        sum = warp_sum(sum);
        odd = warp_sum(odd);
        if (lane == 0) {
            s_sum[warp] = sum;
            s_bad[warp] = odd;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            double total = 0.0;
            u64 bad = 0;
            for (int w = 0; w < warps; ++w) {
                total += s_sum[w];
                bad += s_bad[w];
            }
            s_row_bad = bad != 0 || total != rows[r];  // a NaN sum fails here too
        }
        __syncthreads();
        const int row_bad = s_row_bad;
        if (row_bad || full) {  // compare with the reference: rare, or the scheduled full check
            u64 wrong = 0, nonfinite = 0;
            compare_row(row, want, n, r, slot, wrong, nonfinite, rec, rec_cap);
            wrong = warp_sum(wrong);
            nonfinite = warp_sum(nonfinite);
            if (lane == 0 && wrong) {
                atomicAdd(&flags[FLAGS * slot + 1], wrong);
                if (nonfinite) atomicAdd(&flags[FLAGS * slot + 2], nonfinite);
            }
        }
        if (threadIdx.x == 0 && row_bad) atomicAdd(&flags[FLAGS * slot], 1ull);
        __syncthreads();  // s_sum and s_row_bad are reused by the next row
    }
}

extern "C" __global__ void __launch_bounds__(256) check_f32(const float* c, const float* ref, const double* rows,
                                                            u64 n, int full, u64* flags, u64 slot, u64* rec,
                                                            u64 rec_cap) {
    check<float, float4, 4>(c, ref, rows, n, full, flags, slot, rec, rec_cap);
}

extern "C" __global__ void __launch_bounds__(256) check_f64(const double* c, const double* ref,
                                                            const double* rows, u64 n, int full, u64* flags,
                                                            u64 slot, u64* rec, u64 rec_cap) {
    check<double, double2, 2>(c, ref, rows, n, full, flags, slot, rec, rec_cap);
}
