// SAGAN self-attention on the CPU: exact softmax(q k^T) v with no 1/sqrt(d) scaling, for the small
// head sizes of this model (d = channels/8: 2, 4, 8, 16), where PyTorch's flash kernel spends its
// time in GEMM calls with an inner dimension of 4. One image is processed by one thread from start
// to end, so results do not depend on the thread count and every sum has a fixed order.
//
// Layout: q, k, v, o and their gradients are (B, N, D) float32, contiguous; lse is (B, N).
// The bf16 entry points (`*_bf16`, for training under bf16 autocast) take q, k, v as column slices
// of one (B, N, ld) bf16 tensor (the fused f/g/h conv's output), write o (B, N, D) bf16 (and float32,
// kept for the backward: its sum dO.O from bf16 O made dq's error 2-5x larger), and dq, dk, dv into
// one (B, N, ld) bf16 tensor; inside, everything is float32 as in the float32 path, except a cheaper
// exp. -DSAGAN_BF16_ROUND=1 rounds P to bf16 as the input of P.V and P^T.dO, =2 also dS for dS.K
// and dS^T.Q (what a bf16 dot-product unit, VDPBF16PS or AMX, would take; fp32 accumulation).
// Off by default: on AVX2 rounding P made the kernel 8-13% slower, and rounded dS makes dq's error
// 2-2.5x the float32 kernel's (tests/test_attention_bf16.py; figures in docs/speed.md).
// The bf16 path is compiled as a second translation unit of this file (SAGAN_BF16_TU defined, see
// pipeline/fast_attention.py), so the float32 unit is the float32 code alone and its machine code,
// hence its bits, cannot move with the bf16 code (GCC's FMA contraction in the float32 backward
// changed when both paths shared one unit).
// Per image, keys and values are transposed to (D, Np) (Np: N rounded up to the vector width) so
// the inner loops run over key positions, one hardware vector at a time (W below), for two query
// rows at once (each key vector loaded is used twice). Built by pipeline/fast_attention.py with -O3
// and -march=native, x86-64-v3 (AVX2 + FMA) or the compiler's baseline, with GCC vector extensions.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <omp.h>
#if defined(__x86_64__) || defined(__SSE__)
#include <immintrin.h>
#endif

namespace {

// Vector width in floats: one hardware register per vector (16 with AVX-512, 8 with AVX2, 4 with
// SSE/NEON). A wider GCC vector than the hardware's is split into several registers, which doubles
// the live set of the row loops and spills (AVX2 with 16-wide vectors was slower than PyTorch's SDPA).
#ifndef SAGAN_W
#if defined(__AVX512F__)
#define SAGAN_W 16
#elif defined(__AVX__)
#define SAGAN_W 8
#else
#define SAGAN_W 4
#endif
#endif
constexpr int W = SAGAN_W;
// Query rows per pass (each key vector loaded is used for ROWS rows), chosen per width by
// measurement (bench/bench_attention.py): registers are what limits it.
#ifndef ROWS_SMALL
#define ROWS_SMALL 2  // head sizes <= 4
#endif
#ifndef ROWS_BIG
#define ROWS_BIG 1
#endif
typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));

inline vf splat(float x) { return vf{} + x; }
inline vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// exp(x) for x <= 0; exactly 0 below -80 (e^-80 is far below float32 resolution next to the row's
// maximum term, 1), so no denormals reach the sums. Cephes expf: reduction by ln 2, degree-5
// polynomial, relative error below 2e-7.
inline vf vexp(vf x) {
    const vf keep = (vf)(x >= splat(-80.0f));
#if defined(__AVX512F__) && SAGAN_W == 16
    const __m512 xv = (__m512)x;
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xv, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xv);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
#else
    // no clamp: lanes below -80 (and -inf for padding) give garbage here and are zeroed by `keep`
    const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
    const vf t = x * splat(1.44269504088896341f) + magic;
    const vf n = t - magic;
    vi ti;
    std::memcpy(&ti, &t, sizeof ti);  // the low bits of t hold n (plus the bits of `magic`)
    vf r = x - n * splat(0.693359375f);
    r = r - n * splat(-2.12194440e-4f);
#endif
    vf rv = (vf)r;
    vf p = splat(1.9875691500e-4f);
    p = p * rv + splat(1.3981999507e-3f);
    p = p * rv + splat(8.3334519073e-3f);
    p = p * rv + splat(4.1665795894e-2f);
    p = p * rv + splat(1.6666665459e-1f);
    p = p * rv + splat(5.0000001201e-1f);
    p = p * (rv * rv) + rv + splat(1.0f);
#if defined(__AVX512F__) && SAGAN_W == 16
    const vf e = (vf)_mm512_scalef_ps((__m512)p, n);
#else
    const vi bits = (ti - (0x4B400000 - 127)) << 23;  // 2^n: n + 127 in the exponent field
    vf scale;
    std::memcpy(&scale, &bits, sizeof scale);
    const vf e = p * scale;
#endif
    vi out;
    std::memcpy(&out, &e, sizeof out);
    out &= (vi)keep;
    vf res;
    std::memcpy(&res, &out, sizeof res);
    return res;
}

// Horizontal sum and max in a fixed tree order (halves, then quarters, ...).
template <int N>
inline float tree_sum(const float* a) {
    if constexpr (N == 1) return a[0];
    else {
        float h[N / 2];
        for (int l = 0; l < N / 2; ++l) h[l] = a[l] + a[l + N / 2];
        return tree_sum<N / 2>(h);
    }
}
template <int N>
inline float tree_max(const float* a) {
    if constexpr (N == 1) return a[0];
    else {
        float h[N / 2];
        for (int l = 0; l < N / 2; ++l) h[l] = a[l] > a[l + N / 2] ? a[l] : a[l + N / 2];
        return tree_max<N / 2>(h);
    }
}
inline float hsum(vf v) { float a[W]; std::memcpy(a, &v, sizeof v); return tree_sum<W>(a); }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline float hmax(vf v) { float a[W]; std::memcpy(a, &v, sizeof v); return tree_max<W>(a); }

// Denormal floats are slow on x86; flush them to zero inside the kernel and restore on return.
struct FlushDenormals {
#if defined(__x86_64__) || defined(__SSE__)
    unsigned saved = _mm_getcsr();
    FlushDenormals() { _mm_setcsr(saved | 0x8040); }
    ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// One thread's workspace: one image's keys and values transposed to (D, np), zero-padded, and
// `tail`, added to the scores of the last key block: 0 for real keys, -inf for padding.
template <int D>
struct Keys {
    int n, np;
    std::vector<float> kt, vt, s;
    vf tail;
    explicit Keys(int n_) : n(n_), np((n_ + W - 1) / W * W), kt(D * np, 0.0f), vt(D * np, 0.0f), s((ROWS_SMALL > ROWS_BIG ? ROWS_SMALL : ROWS_BIG) * np) {
        for (int l = 0; l < W; ++l) tail[l] = (np - W + l < n) ? 0.0f : -INFINITY;
    }
    void load(const float* k, const float* v) {
        for (int j = 0; j < n; ++j)
            for (int c = 0; c < D; ++c) { kt[c * np + j] = k[j * D + c]; vt[c * np + j] = v[j * D + c]; }
    }
    // scores of R query rows against key block j
    template <int R>
    inline void scores(const vf (*q)[D], int j, vf* s_out) const {
        vf kc[D];
        for (int c = 0; c < D; ++c) kc[c] = ::load(&kt[c * np + j]);
        for (int r = 0; r < R; ++r) {
            vf acc = q[r][0] * kc[0];
            for (int c = 1; c < D; ++c) acc += q[r][c] * kc[c];
            s_out[r] = (j + W == np) ? acc + tail : acc;
        }
    }
};

template <int D, int R>
inline void forward_rows(const Keys<D>& K, std::vector<float>& s, int i, const float* q, float* o, float* lse) {
    const int np = K.np;
    vf qi[R][D];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < D; ++c) qi[r][c] = splat(q[(i + r) * D + c]);
    vf mx[R];
    for (int r = 0; r < R; ++r) mx[r] = splat(-INFINITY);
    for (int j = 0; j < np; j += W) {
        vf sj[R];
        K.template scores<R>(qi, j, sj);
        for (int r = 0; r < R; ++r) { store(&s[r * np + j], sj[r]); mx[r] = vmax(mx[r], sj[r]); }
    }
    vf m[R], sum[R], acc[R][D];
    for (int r = 0; r < R; ++r) {
        m[r] = splat(hmax(mx[r]));
        sum[r] = splat(0.0f);
        for (int c = 0; c < D; ++c) acc[r][c] = splat(0.0f);
    }
    for (int j = 0; j < np; j += W) {
        vf vc[D];
        for (int c = 0; c < D; ++c) vc[c] = load(&K.vt[c * np + j]);
        for (int r = 0; r < R; ++r) {
            const vf p = vexp(load(&s[r * np + j]) - m[r]);
            sum[r] += p;
            for (int c = 0; c < D; ++c) acc[r][c] += p * vc[c];
        }
    }
    for (int r = 0; r < R; ++r) {
        const float l = hsum(sum[r]);
        for (int c = 0; c < D; ++c) o[(i + r) * D + c] = hsum(acc[r][c]) / l;
        lse[i + r] = m[r][0] + std::log(l);
    }
}

template <int D, int R>
inline void backward_rows(const Keys<D>& K, float* dkt, float* dvt, int i, const float* q, const float* o,
                          const float* dout, const float* lse, float* dq) {
    const int np = K.np;
    vf qi[R][D], doi[R][D], dqi[R][D], li[R], di[R];
    for (int r = 0; r < R; ++r) {
        float delta = 0.0f;  // sum_c dO_ic O_ic = sum_j P_ij dP_ij
        for (int c = 0; c < D; ++c) {
            qi[r][c] = splat(q[(i + r) * D + c]);
            doi[r][c] = splat(dout[(i + r) * D + c]);
            dqi[r][c] = splat(0.0f);
            delta += dout[(i + r) * D + c] * o[(i + r) * D + c];
        }
        li[r] = splat(lse[i + r]);
        di[r] = splat(delta);
    }
    for (int j = 0; j < np; j += W) {
        vf sj[R];
        K.template scores<R>(qi, j, sj);
        vf vc[D];
        for (int c = 0; c < D; ++c) vc[c] = load(&K.vt[c * np + j]);
        vf p[R], ds[R];
        for (int r = 0; r < R; ++r) {
            vf dp = doi[r][0] * vc[0];
            for (int c = 1; c < D; ++c) dp += doi[r][c] * vc[c];
            p[r] = vexp(sj[r] - li[r]);
            ds[r] = p[r] * (dp - di[r]);
        }
        for (int c = 0; c < D; ++c) {
            const vf kc = load(&K.kt[c * np + j]);
            vf dk = load(&dkt[c * np + j]), dv = load(&dvt[c * np + j]);
            for (int r = 0; r < R; ++r) {
                dqi[r][c] += ds[r] * kc;
                dk += ds[r] * qi[r][c];
                dv += p[r] * doi[r][c];
            }
            store(&dkt[c * np + j], dk);
            store(&dvt[c * np + j], dv);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < D; ++c) dq[(i + r) * D + c] = hsum(dqi[r][c]);
}

template <int D>
void forward_range(int n, int b0, int b1, const float* q, const float* k, const float* v, float* o, float* lse) {
    constexpr int ROWS = D <= 4 ? ROWS_SMALL : ROWS_BIG;
    FlushDenormals ftz;
    Keys<D> K(n);
    for (int b = b0; b < b1; ++b) {
        const long off = (long)b * n * D;
        K.load(k + off, v + off);
        int i = 0;
        for (; i + ROWS <= n; i += ROWS) forward_rows<D, ROWS>(K, K.s, i, q + off, o + off, lse + (long)b * n);
        for (; i < n; ++i) forward_rows<D, 1>(K, K.s, i, q + off, o + off, lse + (long)b * n);
    }
}

template <int D>
void backward_range(int n, int b0, int b1, const float* q, const float* k, const float* v, const float* o,
                    const float* dout, const float* lse, float* dq, float* dk, float* dv) {
    constexpr int ROWS = D <= 4 ? ROWS_SMALL : ROWS_BIG;
    FlushDenormals ftz;
    Keys<D> K(n);
    std::vector<float> dkt(D * K.np), dvt(D * K.np);
    for (int b = b0; b < b1; ++b) {
        const long off = (long)b * n * D;
        K.load(k + off, v + off);
        std::fill(dkt.begin(), dkt.end(), 0.0f);
        std::fill(dvt.begin(), dvt.end(), 0.0f);
        const float* lse_b = lse + (long)b * n;
        int i = 0;
        for (; i + ROWS <= n; i += ROWS)
            backward_rows<D, ROWS>(K, dkt.data(), dvt.data(), i, q + off, o + off, dout + off, lse_b, dq + off);
        for (; i < n; ++i)
            backward_rows<D, 1>(K, dkt.data(), dvt.data(), i, q + off, o + off, dout + off, lse_b, dq + off);
        for (int j = 0; j < n; ++j)
            for (int c = 0; c < D; ++c) {
                dk[off + j * D + c] = dkt[c * K.np + j];
                dv[off + j * D + c] = dvt[c * K.np + j];
            }
    }
}

// Splits the batch into one contiguous range per thread of the OpenMP pool. The library links
// libgomp by soname, so it runs on the pool PyTorch already loaded (two pools spinning on two
// cores would slow both down).
template <typename F>
void over_batch(int batch, int threads, F&& range) {
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        range((int)((long)batch * t / nt), (int)((long)batch * (t + 1) / nt));
    }
}

#ifdef SAGAN_BF16_TU
// ------------------------------------------------------------------ the bf16 path (its own unit)
typedef uint32_t vu __attribute__((vector_size(W * 4)));

// exp(x) for x <= 0 on the bf16 path: 2^n times a degree-3 polynomial of 2^f, f in [-1/2, 1/2]
// (relative error below 8e-5, 25x below bf16's 2e-3), zero below -80 like vexp.
inline vf vexp_bf16(vf x) {
    const vf keep = (vf)(x >= splat(-80.0f));
    const vf y = x * splat(1.44269504088896341f);
    const vf magic = splat(12582912.0f);  // as in vexp: rounds y to an integer n held in t's low bits
    const vf t = y + magic;
    const vf f = y - (t - magic);
    vi ti;
    std::memcpy(&ti, &t, sizeof ti);
    vf p = splat(5.51716685e-2f);
    p = p * f + splat(2.42611140e-1f);
    p = p * f + splat(6.93260968e-1f);
    p = p * f + splat(9.99928057e-1f);
    const vi bits = (ti - (0x4B400000 - 127)) << 23;
    vf scale;
    std::memcpy(&scale, &bits, sizeof scale);
    const vf e = p * scale;
    vi out;
    std::memcpy(&out, &e, sizeof out);
    out &= (vi)keep;
    vf res;
    std::memcpy(&res, &out, sizeof res);
    return res;
}

#ifndef SAGAN_BF16_ROUND
#define SAGAN_BF16_ROUND 0
#endif
constexpr int BF16_ROUND = SAGAN_BF16_ROUND;

// Rounds float32 lanes to the nearest bf16 value (ties to even), kept as float32: the operand a
// bf16 dot-product unit would see. Only for finite values (P and dS).
inline vf round_bf16(vf x) {
    vu u;
    std::memcpy(&u, &x, sizeof u);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    vf r;
    std::memcpy(&r, &u, sizeof r);
    return r;
}

// bf16 storage: the high half of a float32, so widening is exact.
typedef uint16_t bf16;
inline float get(const bf16* p) { uint32_t u = (uint32_t)*p << 16; float f; std::memcpy(&f, &u, 4); return f; }
// as torch's .to(torch.bfloat16) on the CPU: round to nearest even, NaN -> 0xFFFF
inline void put(bf16* p, float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    *p = x != x ? (bf16)0xFFFF : (bf16)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// One image's keys and values from the bf16 path's (N, ld) rows.
template <int D>
void load_keys(Keys<D>& K, const bf16* k, const bf16* v, long ld) {
    for (int j = 0; j < K.n; ++j)
        for (int c = 0; c < D; ++c) {
            K.kt[c * K.np + j] = get(&k[j * ld + c]);
            K.vt[c * K.np + j] = get(&v[j * ld + c]);
        }
}

// The float32 path's loops with bf16 loads and stores, vexp_bf16, and (with BF16_ROUND) P and dS
// rounded to bf16 as the products' inputs. q (and dq) rows are ld elements apart.
template <int D, int R>
inline void forward_rows_bf16(const Keys<D>& K, std::vector<float>& s, int i, const bf16* q, long ld, float* o,
                              float* lse) {
    const int np = K.np;
    vf qi[R][D];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < D; ++c) qi[r][c] = splat(get(&q[(i + r) * ld + c]));
    vf mx[R];
    for (int r = 0; r < R; ++r) mx[r] = splat(-INFINITY);
    for (int j = 0; j < np; j += W) {
        vf sj[R];
        K.template scores<R>(qi, j, sj);
        for (int r = 0; r < R; ++r) { store(&s[r * np + j], sj[r]); mx[r] = vmax(mx[r], sj[r]); }
    }
    vf m[R], sum[R], acc[R][D];
    for (int r = 0; r < R; ++r) {
        m[r] = splat(hmax(mx[r]));
        sum[r] = splat(0.0f);
        for (int c = 0; c < D; ++c) acc[r][c] = splat(0.0f);
    }
    for (int j = 0; j < np; j += W) {
        vf vc[D];
        for (int c = 0; c < D; ++c) vc[c] = load(&K.vt[c * np + j]);
        for (int r = 0; r < R; ++r) {
            const vf p = vexp_bf16(load(&s[r * np + j]) - m[r]);
            sum[r] += p;  // the row sum stays float32, as in a flash kernel
            const vf pb = BF16_ROUND >= 1 ? round_bf16(p) : p;
            for (int c = 0; c < D; ++c) acc[r][c] += pb * vc[c];
        }
    }
    for (int r = 0; r < R; ++r) {
        const float l = hsum(sum[r]);
        for (int c = 0; c < D; ++c) o[(i + r) * D + c] = hsum(acc[r][c]) / l;
        lse[i + r] = m[r][0] + std::log(l);
    }
}

template <int D, int R>
inline void backward_rows_bf16(const Keys<D>& K, float* dkt, float* dvt, int i, const bf16* q, long ld,
                               const float* o, const bf16* dout, const float* lse, bf16* dq) {
    const int np = K.np;
    vf qi[R][D], doi[R][D], dqi[R][D], li[R], di[R];
    for (int r = 0; r < R; ++r) {
        float delta = 0.0f;  // sum_c dO_ic O_ic, from the float32 O
        for (int c = 0; c < D; ++c) {
            qi[r][c] = splat(get(&q[(i + r) * ld + c]));
            doi[r][c] = splat(get(&dout[(i + r) * D + c]));
            dqi[r][c] = splat(0.0f);
            delta += get(&dout[(i + r) * D + c]) * o[(i + r) * D + c];
        }
        li[r] = splat(lse[i + r]);
        di[r] = splat(delta);
    }
    for (int j = 0; j < np; j += W) {
        vf sj[R];
        K.template scores<R>(qi, j, sj);
        vf vc[D];
        for (int c = 0; c < D; ++c) vc[c] = load(&K.vt[c * np + j]);
        vf p[R], ds[R];
        for (int r = 0; r < R; ++r) {
            vf dp = doi[r][0] * vc[0];
            for (int c = 1; c < D; ++c) dp += doi[r][c] * vc[c];
            const vf pf = vexp_bf16(sj[r] - li[r]);
            ds[r] = pf * (dp - di[r]);  // from float32 P; then rounded, with BF16_ROUND
            if (BF16_ROUND >= 2) ds[r] = round_bf16(ds[r]);
            p[r] = BF16_ROUND >= 1 ? round_bf16(pf) : pf;
        }
        for (int c = 0; c < D; ++c) {
            const vf kc = load(&K.kt[c * np + j]);
            vf dk = load(&dkt[c * np + j]), dv = load(&dvt[c * np + j]);
            for (int r = 0; r < R; ++r) {
                dqi[r][c] += ds[r] * kc;
                dk += ds[r] * qi[r][c];
                dv += p[r] * doi[r][c];
            }
            store(&dkt[c * np + j], dk);
            store(&dvt[c * np + j], dv);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < D; ++c) put(&dq[(i + r) * ld + c], hsum(dqi[r][c]));
}

// Writes the output in float32 (o, for the backward) and bf16 (ob).
template <int D>
void forward_range_bf16(int n, long ld, int b0, int b1, const bf16* q, const bf16* k, const bf16* v, bf16* ob,
                        float* o, float* lse) {
    constexpr int ROWS = D <= 4 ? ROWS_SMALL : ROWS_BIG;
    FlushDenormals ftz;
    Keys<D> K(n);
    for (int b = b0; b < b1; ++b) {
        const long in = (long)b * n * ld, off = (long)b * n * D;
        load_keys(K, k + in, v + in, ld);
        int i = 0;
        for (; i + ROWS <= n; i += ROWS) forward_rows_bf16<D, ROWS>(K, K.s, i, q + in, ld, o + off, lse + (long)b * n);
        for (; i < n; ++i) forward_rows_bf16<D, 1>(K, K.s, i, q + in, ld, o + off, lse + (long)b * n);
        for (long x = off; x < off + (long)n * D; ++x) put(&ob[x], o[x]);
    }
}

template <int D>
void backward_range_bf16(int n, long ld, int b0, int b1, const bf16* q, const bf16* k, const bf16* v,
                         const float* o, const bf16* dout, const float* lse, bf16* dq, bf16* dk, bf16* dv) {
    constexpr int ROWS = D <= 4 ? ROWS_SMALL : ROWS_BIG;
    FlushDenormals ftz;
    Keys<D> K(n);
    std::vector<float> dkt(D * K.np), dvt(D * K.np);
    for (int b = b0; b < b1; ++b) {
        const long in = (long)b * n * ld, off = (long)b * n * D;
        load_keys(K, k + in, v + in, ld);
        std::fill(dkt.begin(), dkt.end(), 0.0f);
        std::fill(dvt.begin(), dvt.end(), 0.0f);
        const float* lse_b = lse + (long)b * n;
        int i = 0;
        for (; i + ROWS <= n; i += ROWS)
            backward_rows_bf16<D, ROWS>(K, dkt.data(), dvt.data(), i, q + in, ld, o + off, dout + off, lse_b, dq + in);
        for (; i < n; ++i)
            backward_rows_bf16<D, 1>(K, dkt.data(), dvt.data(), i, q + in, ld, o + off, dout + off, lse_b, dq + in);
        for (int j = 0; j < n; ++j)
            for (int c = 0; c < D; ++c) {
                put(&dk[in + j * ld + c], dkt[c * K.np + j]);
                put(&dv[in + j * ld + c], dvt[c * K.np + j]);
            }
    }
}
#endif  // SAGAN_BF16_TU

}  // namespace

extern "C" {

#ifndef SAGAN_BF16_TU
// The vector width this build was compiled for (recorded with benchmarks).
int sagan_attention_vector_width() { return W; }

// Both return 0 on success, -1 for an unsupported head size (the caller then uses PyTorch's SDPA).
int sagan_attention_forward(int n, int d, int batch, int threads, const float* q, const float* k, const float* v,
                            float* o, float* lse) {
    switch (d) {
#define CASE(D) case D: over_batch(batch, threads, [&](int b0, int b1) { forward_range<D>(n, b0, b1, q, k, v, o, lse); }); return 0;
        CASE(1) CASE(2) CASE(4) CASE(8) CASE(16)
#undef CASE
        default: return -1;
    }
}

int sagan_attention_backward(int n, int d, int batch, int threads, const float* q, const float* k, const float* v,
                             const float* o, const float* dout, const float* lse, float* dq, float* dk,
                             float* dv) {
    switch (d) {
#define CASE(D) case D: over_batch(batch, threads, [&](int b0, int b1) { backward_range<D>(n, b0, b1, q, k, v, o, dout, lse, dq, dk, dv); }); return 0;
        CASE(1) CASE(2) CASE(4) CASE(8) CASE(16)
#undef CASE
        default: return -1;
    }
}

#else
// The bf16 path: q, k, v, dq, dk, dv are bf16 (uint16) with rows ld elements apart (batch: n * ld
// apart; the fused conv's (B, N, 3d) output and its gradient), ob and dout bf16 (B, N, d); o (the
// output in float32, for the backward) and lse float32.
int sagan_attention_forward_bf16(int n, int d, int batch, int threads, int ld, const bf16* q, const bf16* k,
                                 const bf16* v, bf16* ob, float* o, float* lse) {
    switch (d) {
#define CASE(D) case D: over_batch(batch, threads, [&](int b0, int b1) { forward_range_bf16<D>(n, ld, b0, b1, q, k, v, ob, o, lse); }); return 0;
        CASE(1) CASE(2) CASE(4) CASE(8) CASE(16)
#undef CASE
        default: return -1;
    }
}

int sagan_attention_backward_bf16(int n, int d, int batch, int threads, int ld, const bf16* q, const bf16* k,
                                  const bf16* v, const float* o, const bf16* dout, const float* lse, bf16* dq,
                                  bf16* dk, bf16* dv) {
    switch (d) {
#define CASE(D) case D: over_batch(batch, threads, [&](int b0, int b1) { backward_range_bf16<D>(n, ld, b0, b1, q, k, v, o, dout, lse, dq, dk, dv); }); return 0;
        CASE(1) CASE(2) CASE(4) CASE(8) CASE(16)
#undef CASE
        default: return -1;
    }
}
#endif  // SAGAN_BF16_TU

}  // extern "C"
