// The memory scan's one kernel: a March element (read and check a pattern, then write another)
// over a byte range of one allocation. See drivers/cuda/memory.py for how it is driven.
//
// Speed: 16-byte loads and stores, UNROLL of them in flight per thread before any is checked,
// a grid-stride loop over enough blocks to fill the card, the pattern tile in shared memory and
// the address pattern computed in registers (nothing read but the memory under test), and
// mismatches counted in shared memory per block (out of line: the loop carries no slow path)
// and flushed with one global atomic per counter and block, so a dead chip does not serialise
// the whole card on a few global counters.

typedef unsigned long long u64;
#define MAX_CHIPS 256
#define NREC (9 + MAX_CHIPS)  // counters[NREC]: how many mismatching bytes were offered a record
#define TILE_WORDS 512        // the 4 KiB pattern tile
#define LOW_BITS 0x0101010101010101ull
#define UNROLL 4

// the pattern's 64-bit word at byte offset g of the tested region
__device__ __forceinline__ u64 pattern(u64 g, const u64* tile, int is_addr, u64 inv) {
    return (is_addr ? g : tile[(g >> 3) & (TILE_WORDS - 1)]) ^ inv;
}

// the bytes of the 8-byte word at b that lie in [lo, hi), as a byte mask
__device__ __forceinline__ u64 edge_mask(u64 b, u64 lo, u64 hi) {
    if (b + 8 <= lo || b >= hi) return 0ull;
    u64 m = ~0ull;
    if (b < lo) m &= ~0ull << ((lo - b) * 8);
    if (b + 8 > hi) m &= ~0ull >> ((b + 8 - hi) * 8);
    return m;
}

// the slow path, out of line so the scan loop stays small: count the failing bytes of one word
// in the block's shared counters and record them while there is room
__device__ __noinline__ void mismatch(u64 v, u64 e, u64 d, u64 g, int chips, u64* block_counts, u64* counters,
                                      u64* rec_addr, unsigned char* rec_exp, unsigned char* rec_got, u64 limit) {
    u64 nz = d | (d >> 4);
    nz |= nz >> 2;
    nz |= nz >> 1;
    const u64 failing = (u64)__popcll(nz & LOW_BITS);  // failing bytes in the word
    atomicAdd(&block_counts[0], failing);
    for (int b = 0; b < 8; ++b) {
        const u64 n = (u64)__popcll((d >> b) & LOW_BITS);
        if (n) atomicAdd(&block_counts[1 + b], n);
    }
    atomicAdd(&block_counts[9 + (g >> 8) % (u64)chips], failing);  // all 8 bytes are on one chip
    if (*(volatile u64*)&counters[NREC] >= limit) return;  // records: global atomics only until full
    for (int j = 0; j < 8; ++j) {
        if (!((d >> (8 * j)) & 0xff)) continue;
        const u64 i = atomicAdd(&counters[NREC], 1ull);
        if (i < limit) {
            rec_addr[i] = g + j;
            rec_exp[i] = (unsigned char)(e >> (8 * j));
            rec_got[i] = (unsigned char)(v >> (8 * j));
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) march(
    unsigned char* buf, u64 base, u64 lo, u64 hi,
    const u64* rtile, int r_addr, u64 r_inv, int do_read,
    const u64* wtile, int w_addr, u64 w_inv, int do_write,
    int descending, int chips, u64* counters,
    u64* rec_addr, unsigned char* rec_exp, unsigned char* rec_got, u64 limit)
{
    __shared__ u64 s_read[TILE_WORDS];
    __shared__ u64 s_write[TILE_WORDS];
    __shared__ u64 block_counts[9 + MAX_CHIPS];  // total, 8 bits, chips
    for (int t = threadIdx.x; t < TILE_WORDS; t += blockDim.x) {
        if (do_read && !r_addr) s_read[t] = rtile[t];
        if (do_write && !w_addr) s_write[t] = wtile[t];
    }
    for (int t = threadIdx.x; t < 9 + chips; t += blockDim.x) block_counts[t] = 0;
    __syncthreads();

    ulonglong2* vec = (ulonglong2*)buf;  // cudaMalloc'd: 256-byte aligned
    const u64 v0 = lo >> 4, v1 = (hi + 15) >> 4, nv = v1 - v0;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 k0 = (u64)blockIdx.x * blockDim.x + threadIdx.x; k0 < nv; k0 += stride * UNROLL) {
        u64 at[UNROLL];
        ulonglong2 got[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {  // every load of the group in flight before any check
            const u64 k = k0 + u * stride;
            at[u] = descending ? (v1 - 1 - k) : (v0 + k);
            got[u] = make_ulonglong2(0ull, 0ull);
            if (do_read && k < nv) got[u] = __ldcg(vec + at[u]);
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            if (k0 + u * stride >= nv) break;
            const u64 b0 = at[u] << 4;
            const bool edge = b0 < lo || b0 + 16 > hi;
            const u64 m0 = edge ? edge_mask(b0, lo, hi) : ~0ull;
            const u64 m1 = edge ? edge_mask(b0 + 8, lo, hi) : ~0ull;
            const u64 g = base + b0;
            if (do_read) {
                const u64 e0 = pattern(g, s_read, r_addr, r_inv), e1 = pattern(g + 8, s_read, r_addr, r_inv);
                const u64 d0 = (got[u].x ^ e0) & m0, d1 = (got[u].y ^ e1) & m1;
                if (d0) mismatch(got[u].x, e0, d0, g, chips, block_counts, counters, rec_addr, rec_exp, rec_got, limit);
                if (d1)
                    mismatch(got[u].y, e1, d1, g + 8, chips, block_counts, counters, rec_addr, rec_exp, rec_got,
                             limit);
            }
            if (do_write) {
                ulonglong2 w = make_ulonglong2(pattern(g, s_write, w_addr, w_inv),
                                               pattern(g + 8, s_write, w_addr, w_inv));
                if (edge) {  // keep the bytes outside [lo, hi)
                    const ulonglong2 old = do_read ? got[u] : vec[at[u]];
                    w.x = (old.x & ~m0) | (w.x & m0);
                    w.y = (old.y & ~m1) | (w.y & m1);
                }
                __stcg(vec + at[u], w);
            }
        }
    }
    __syncthreads();
    for (int t = threadIdx.x; t < 9 + chips; t += blockDim.x)
        if (block_counts[t]) atomicAdd(&counters[t], block_counts[t]);
}
