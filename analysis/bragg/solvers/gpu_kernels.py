"""Fused GPU kernels (CUDA C for CuPy's ``RawModule``) of the per-position Bragg ePIE step and ML passes, with a
NumPy reference each.

The CUDA source :data:`CUDA_SOURCE` is what runs on a GPU: :class:`analysis.bragg.solvers.fused_gpu.FusedGpuSweep`
(and ``FusedGpuML`` on it) compiles it once with ``cupy.RawModule`` and launches its kernels on CuPy arrays.
Every kernel has a NumPy reference (:data:`KERNELS`, same arguments in the same order, outputs written in
place) that states what the kernel computes. Three things check that they agree without a GPU:

* ``testing/fake_cupy.py`` executes a ``RawModule`` kernel through its reference, so the whole fused path
  runs in CI on CPU, and ``testing/gpu_traffic.py`` counts each launch as one kernel moving
  :func:`KernelSpec.traffic` bytes;
* the same source is compiled as C++ by the host compiler with the small shim under ``PXM_HOST`` (thread and
  block indices 0, one thread walking every grid-stride loop, atomics as plain updates, warp reductions
  as the identity) and run against the references (``tests/analysis/test_gpu_kernels.py``);
* ``nvcc`` compiles it for sm_90 (H100) where the CUDA toolkit is installed (the test skips otherwise).

Kernels take C-contiguous arrays: complex64 as ``float2``, float32, bool as bytes; every loop is a
grid-stride loop, so any launch grid is correct. Layouts as in :mod:`analysis.bragg.solvers.cpu_kernels` except the
folded box, kept ``(N1P, N2, NM)`` here (cuFFT runs the r1/r2 transforms as one strided 2D plan): box
``(N1P, N2, N3)``, N3 = U·NM, crop data ``(N1, N2, NM)`` centred, the folded box in FFT order along every axis.
"""

# Why this module is long: the CUDA source of the fused GPU sweep and one NumPy reference per kernel, side by side
# so a kernel and its reference are read and changed together (docs/decisions/0009-fused-gpu-kernels.md).

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

CUDA_SOURCE = r"""
#ifdef PXM_HOST
#include <cmath>
#include <cstring>
struct float2 { float x, y; };
struct pxm_dim3 { unsigned int x, y, z; };
static const pxm_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
#define __device__ static inline
#define __forceinline__
static inline float2 make_float2(float a, float b) { float2 r; r.x = a; r.y = b; return r; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
static inline unsigned int atomicMax(unsigned int* p, unsigned int v) {
    unsigned int o = *p;
    if (v > o) *p = v;
    return o;
}
static inline double atomicAdd(double* p, double v) { double o = *p; *p = o + v; return o; }
static inline void sincospi(double x, double* s, double* c) { *s = std::sin(M_PI * x); *c = std::cos(M_PI * x); }
static inline double pxm_warp_sum(double v) { return v; }
static inline float pxm_warp_max(float v) { return v; }
#else
__device__ __forceinline__ double pxm_warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float pxm_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    return v;
}
#endif

#define PXM_LOOP(i, n) for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
                            i += (long long)blockDim.x * gridDim.x)
#define PXM_LANE0 ((threadIdx.x & 31u) == 0u)

__device__ __forceinline__ float2 cmul(float2 a, float2 b) {
    return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}
__device__ __forceinline__ float2 cmulc(float2 a, float2 b) {          /* conj(a) * b */
    return make_float2(a.x * b.x + a.y * b.y, a.x * b.y - a.y * b.x);
}
__device__ __forceinline__ float2 cscale(float2 a, float s) { return make_float2(a.x * s, a.y * s); }
__device__ __forceinline__ float cabs2(float2 a) { return a.x * a.x + a.y * a.y; }
__device__ __forceinline__ double fftfreq(int i, int n) { return (double)(i < (n + 1) / 2 ? i : i - n) / n; }
__device__ __forceinline__ int centred(int i, int n) {  /* FFT bin i of an n-point axis -> centred index */
    int h = n - n / 2;
    return i < h ? i + n / 2 : i - h;
}

/* The index helpers every kernel shares (one definition each, so a layout change is made once). */
struct pxm_at { long long ab; int a, b, c; };   /* element of an (n1p, n2, inner) array: line ab = a n2 + b, index c */
__device__ __forceinline__ pxm_at pxm_split(long long i, int n2, int inner) {
    pxm_at e;
    e.c = (int)(i % inner);
    e.ab = i / inner;
    e.b = (int)(e.ab % n2);
    e.a = (int)(e.ab / n2);
    return e;
}
/* Flat index in rho (NO1, no2, no3) of r3 index c on line (a, b) of the box view at (o1, o2, o3). */
__device__ __forceinline__ long long pxm_obj(pxm_at e, int c, int no2, int no3, int o1, int o2, int o3) {
    return ((long long)(o1 + e.a) * no2 + (o2 + e.b)) * no3 + o3 + c;
}
/* sum_q conj(tw[q, c mod nm] ramp[a, q]) spec[ab, q]: the shear ramp's conjugate and the unnormalised inverse
   nm-point DFT of a folded spectrum line at box element e (F^H's last step, replicated along r3). */
__device__ __forceinline__ float2 pxm_unfold(const float2* spec, const float2* tw, const float2* ramp, pxm_at e,
                                             int nm) {
    int k = e.c % nm;
    float2 d = make_float2(0.0f, 0.0f);
    for (int q = 0; q < nm; ++q) {
        float2 t = cmulc(cmul(tw[(long long)q * nm + k], ramp[(long long)e.a * nm + q]), spec[e.ab * nm + q]);
        d.x += t.x;
        d.y += t.y;
    }
    return d;
}
/* ramp[a, q] sum_k tw[q, k] sum_u x(u nm + k) for the fold of one box line: x(c) = left[c] * right[c] (+ left2[c]
   * right2[c] with left2), the exit wave P rho folded along r3 (seed Eq 1), its nm-point DFT and the shear ramp. */
__device__ __forceinline__ float2 pxm_fold_line(const float2* left, const float2* right, const float2* left2,
                                                const float2* right2, const float2* tw, const float2* ramp, pxm_at e,
                                                int n3, int nm, float* lmax, float* rmax) {
    float2 acc = make_float2(0.0f, 0.0f);
    for (int k = 0; k < nm; ++k) {
        float2 f = make_float2(0.0f, 0.0f);
        for (int c = k; c < n3; c += nm) {
            float2 lv = left[c], rv = right[c];
            float2 t = cmul(lv, rv);
            if (left2) {
                float2 u = cmul(left2[c], right2[c]);
                t.x += u.x;
                t.y += u.y;
            }
            f.x += t.x;
            f.y += t.y;
            if (lmax) {
                *lmax = fmaxf(*lmax, cabs2(lv));
                *rmax = fmaxf(*rmax, cabs2(rv));
            }
        }
        float2 t = cmul(f, tw[(long long)e.c * nm + k]);
        acc.x += t.x;
        acc.y += t.y;
    }
    return cmul(acc, ramp[(long long)e.a * nm + e.c]);
}
/* Kept Psi_j crops and data are (n1, n2, nm): FFT order (ci) and centred (d, plane kc). Row a of the folded box is
   row a (a < pos) or a - (n1p - n1) of the crop, or outside it (false). */
struct pxm_crop { long long ci, d; int kc; };
__device__ __forceinline__ bool pxm_crop_at(pxm_at e, int n1p, int n1, int n2, int nm, pxm_crop* out) {
    int pos = n1 - n1 / 2, neg = n1 / 2;
    int r = e.a < pos ? e.a : (e.a >= n1p - neg ? e.a - (n1p - n1) : -1);
    if (r < 0) return false;
    out->ci = ((long long)r * n2 + e.b) * nm + e.c;
    out->kc = centred(e.c, nm);
    out->d = ((long long)((r < pos ? r : r - n1) + n1 / 2) * n2 + centred(e.b, n2)) * nm + out->kc;
    return true;
}

/* spec[z, b, f] = scale e^{-2 pi i f3(f) s1} sum_a p2f[z, a, f] e^{-2 pi i f2(a) s0} e^{+2 pi i a b / n2} for each of
   nb stacked probes z: the sub-pixel shift of P2 in 2D frequency space and the unnormalised inverse DFT along r2,
   i.e. FFT_r3(Shift_g P2) up to scale (nb = 2: P2 and its line-search direction in one launch). */
extern "C" __global__ void pxm_shifted_spectrum(const float2* p2f, float2* spec, int nb, int n2, int n3, double s0,
                                                double s1, float scale) {
    PXM_LOOP(i, (long long)nb * n2 * n3) {
        long long zb = i / n3, z0 = (zb / n2) * n2 * n3;
        int b = (int)(zb % n2), f = (int)(i % n3);
        double re = 0.0, im = 0.0, s, c;
        for (int a = 0; a < n2; ++a) {
            sincospi(2.0 * ((double)((long long)a * b % n2) / n2 - fftfreq(a, n2) * s0), &s, &c);
            float2 v = p2f[z0 + (long long)a * n3 + f];
            re += v.x * c - v.y * s;
            im += v.x * s + v.y * c;
        }
        sincospi(-2.0 * fftfreq(f, n3) * s1, &s, &c);
        spec[i] = make_float2((float)((re * c - im * s) * scale), (float)((re * s + im * c) * scale));
    }
}

/* P2~[a, f] += scale / den e^{+2 pi i (f2(a) s0 + f3(f) s1)} sum_b proj[b, f] e^{-2 pi i a b / n2}: the DFT along r2 of
   B^H's result and the inverse sub-pixel shift, added to P2 in 2D frequency space (Eq 6);
   den = max(vmax, tiny) if by_vmax else 1. */
extern "C" __global__ void pxm_probe_update(float2* p2f, const float2* proj, const float* maxes, int n2, int n3,
                                            double s0, double s1, float scale, int by_vmax) {
    float den = by_vmax ? fmaxf(maxes[1], 1e-30f) : 1.0f;
    PXM_LOOP(i, (long long)n2 * n3) {
        int a = (int)(i / n3), f = (int)(i % n3);
        double re = 0.0, im = 0.0, s, c;
        for (int b = 0; b < n2; ++b) {
            sincospi(-2.0 * (double)((long long)a * b % n2) / n2, &s, &c);
            float2 v = proj[(long long)b * n3 + f];
            re += v.x * c - v.y * s;
            im += v.x * s + v.y * c;
        }
        sincospi(2.0 * (fftfreq(a, n2) * s0 + fftfreq(f, n3) * s1), &s, &c);
        double k = (double)scale / den;
        p2f[i] = make_float2(p2f[i].x + (float)((re * c - im * s) * k), p2f[i].y + (float)((re * s + im * c) * k));
    }
}

/* box[z, a, b, f] = spec[z, b, f] slices[a, f] for nb stacked spectra z: the extrusion B in r3-frequency space. */
extern "C" __global__ void pxm_extrude(const float2* spec, const float2* slices, float2* box, int nb, int n1p, int n2,
                                       int n3) {
    PXM_LOOP(i, (long long)nb * n1p * n2 * n3) {
        int f = (int)(i % n3);
        long long zab = i / n3;
        int b = (int)(zab % n2), a = (int)((zab / n2) % n1p);
        long long z = zab / ((long long)n2 * n1p);
        box[i] = cmul(spec[(z * n2 + b) * n3 + f], slices[(long long)a * n3 + f]);
    }
}

/* spec[a, b, q] = ramp[a, q] sum_k tw[q, k] sum_u p[a, b, u nm + k] rho[o1 + a, o2 + b, o3 + u nm + k]: the exit wave
   P_j rho folded along r3 (seed Eq 1), its nm-point DFT (tw = e^{-2 pi i q k / nm}) and the shear ramp, in one pass;
   maxes[0|1] = max |p|^2 | |rho|^2 on the view (>= 0). The threads of one (a, b) line share its reads (cache). */
extern "C" __global__ void pxm_fold_spectrum(const float2* p, const float2* obj, const float2* tw, const float2* ramp,
                                             float2* spec, float* maxes, int n1p, int n2, int n3, int nm, int no2,
                                             int no3, int o1, int o2, int o3) {
    float pm = 0.0f, vm = 0.0f;
    PXM_LOOP(i, (long long)n1p * n2 * nm) {
        pxm_at e = pxm_split(i, n2, nm);
        spec[i] = pxm_fold_line(p + e.ab * n3, obj + pxm_obj(e, 0, no2, no3, o1, o2, o3), (const float2*)0,
                                (const float2*)0, tw, ramp, e, n3, nm, &pm, &vm);
    }
    pm = pxm_warp_max(pm);
    vm = pxm_warp_max(vm);
    if (PXM_LANE0) {
        atomicMax((unsigned int*)&maxes[0], __float_as_uint(pm));
        atomicMax((unsigned int*)&maxes[1], __float_as_uint(vm));
    }
}

/* The line search's two folded spectra in one pass (as pxm_fold_spectrum): s1 from P dV + dP V, s2 from dP dV. */
extern "C" __global__ void pxm_fold_spectrum_pair(const float2* p, const float2* obj, const float2* dp,
                                                  const float2* dobj, const float2* tw, const float2* ramp, float2* s1,
                                                  float2* s2, int n1p, int n2, int n3, int nm, int no2, int no3,
                                                  int o1, int o2, int o3) {
    PXM_LOOP(i, (long long)n1p * n2 * nm) {
        pxm_at e = pxm_split(i, n2, nm);
        long long pb = e.ab * n3, ob = pxm_obj(e, 0, no2, no3, o1, o2, o3);
        s1[i] = pxm_fold_line(p + pb, dobj + ob, dp + pb, obj + ob, tw, ramp, e, n3, nm, (float*)0, (float*)0);
        s2[i] = pxm_fold_line(dp + pb, dobj + ob, (const float2*)0, (const float2*)0, tw, ramp, e, n3, nm, (float*)0,
                              (float*)0);
    }
}

/* Eqs 13 and 11 on the unnormalised folded field A (|Psi|^2 = scale2 |A|^2), in place, over the whole folded box:
   rows outside the r1 crop <- 0; on the crop field <- A (sqrt(I/h) - 1) scale2 where omega = 1, else 0;
   b <- b ((1 - gamma) + gamma sqrt(I/h))^2 where omega = 1; misfit[0] += sum omega (sqrt(h) - sqrt(I))^2. */
extern "C" __global__ void pxm_modulus(float2* field, const float* inten, const unsigned char* mask,
                                       const unsigned char* plane_ok, float* bg, double* misfit, int n1p, int n2,
                                       int nm, int n1, float scale2, float gamma) {
    double acc = 0.0;
    PXM_LOOP(i, (long long)n1p * n2 * nm) {
        pxm_crop cr;
        if (!pxm_crop_at(pxm_split(i, n2, nm), n1p, n1, n2, nm, &cr)) {
            field[i] = make_float2(0.0f, 0.0f);
            continue;
        }
        long long d = cr.d;
        int kc = cr.kc;
        float2 z = field[i];
        float b_old = bg[d];
        float sqrt_h = sqrtf(fmaxf(scale2 * cabs2(z) + b_old, 1e-30f));
        bool on = mask[d] && plane_ok[kc];
        float amp = on ? sqrtf(fmaxf(inten[d], 0.0f)) : sqrt_h;
        float r = sqrt_h - amp;
        acc += (double)(r * r);
        float ratio = amp / sqrt_h;
        float t = (1.0f - gamma) + gamma * ratio;
        bg[d] = b_old * t * t;
        field[i] = cscale(z, (ratio - 1.0f) * scale2);
    }
    acc = pxm_warp_sum(acc);
    if (PXM_LANE0) atomicAdd(misfit, acc);
}

/* Eqs 5, 7, 9 on the view at o of rho, in place, with
   dpsi[a, b, c] = sum_q conj(tw[q, c mod nm] ramp[a, q]) spec[a, b, q] (the shear ramp's conjugate and the
   unnormalised inverse nm-point DFT of the folded correction, replicated along r3);
   with probe_gradient, p <- conj(rho_old) dpsi (/ ((1 - alpha)|rho|^2 + alpha vmax) if alpha != 1).
   maxes = (max|P|^2, max|rho|^2). */
extern "C" __global__ void pxm_object_update(float2* obj, const unsigned char* support, float2* p, const float2* spec,
                                             const float2* tw, const float2* ramp, const float* maxes, int n1p,
                                             int n2, int n3, int nm, int no2, int no3, int o1, int o2, int o3,
                                             float beta, float mu, float alpha, int probe_gradient) {
    float pmax = maxes[0], vmax = maxes[1];
    float b_pmax = beta * pmax, mu_j = mu * pmax;
    PXM_LOOP(i, (long long)n1p * n2 * n3) {
        pxm_at e = pxm_split(i, n2, n3);
        float2 d = pxm_unfold(spec, tw, ramp, e, nm);
        long long o = pxm_obj(e, e.c, no2, no3, o1, o2, o3);
        float2 pk = p[i], v = obj[o];
        float sbar = support[o] ? 0.0f : mu_j;
        float lam = (1.0f - beta) * cabs2(pk) + b_pmax + sbar;
        float2 num = cmulc(pk, d);
        num.x -= sbar * v.x;
        num.y -= sbar * v.y;
        obj[o] = make_float2(v.x + num.x / lam, v.y + num.y / lam);
        if (probe_gradient) {
            float2 g = cmulc(v, d);
            if (alpha != 1.0f) g = cscale(g, 1.0f / fmaxf((1.0f - alpha) * cabs2(v) + alpha * vmax, 1e-30f));
            p[i] = g;
        }
    }
}

/* out[b, f] = sum_a ghat[a, b, f] conj(slices[a, f]): B^H in r3-frequency space (sums in double). */
extern "C" __global__ void pxm_project(const float2* ghat, const float2* slices, float2* out, int n1p, int n2, int n3) {
    PXM_LOOP(i, (long long)n2 * n3) {
        int f = (int)(i % n3);
        double re = 0.0, im = 0.0;
        for (int a = 0; a < n1p; ++a) {
            float2 t = cmulc(slices[(long long)a * n3 + f], ghat[(long long)a * n2 * n3 + i]);
            re += t.x;
            im += t.y;
        }
        out[i] = make_float2((float)re, (float)im);
    }
}

/* --- maximum-likelihood refinement (Thibault & Guizar-Sicairos 2012; seed Eq 4) ------------------------------- */

/* Data term over the folded box: Psi = kept[crop] if use_kept else field; write_kept: kept[crop] <- Psi;
   cost[0] += sum omega l(h, I), h = scale2 |Psi|^2 + b (amplitude (sqrt h - sqrt I)^2 or Poisson h - I log h);
   write_chi: chi <- Psi (1 - sqrt(I/h) | 1 - I/h) scale2 on omega, 0 elsewhere, on the crop rows only (the caller
   keeps chi's other rows 0: a buffer zeroed once, so they are not written per position). */
extern "C" __global__ void pxm_data_term(const float2* field, float2* kept, float2* chi, const float* inten,
                                         const unsigned char* mask, const unsigned char* plane_ok, const float* bg,
                                         double* cost, int n1p, int n2, int nm, int n1, double scale2, int poisson,
                                         int use_kept, int write_kept, int write_chi) {
    double acc = 0.0;
    PXM_LOOP(i, (long long)n1p * n2 * nm) {
        pxm_crop cr;
        if (!pxm_crop_at(pxm_split(i, n2, nm), n1p, n1, n2, nm, &cr)) continue;
        long long d = cr.d;
        int kc = cr.kc;
        float2 z = use_kept ? kept[cr.ci] : field[i];
        if (write_kept) kept[cr.ci] = z;
        bool on = mask[d] && plane_ok[kc];
        double h = fmax(scale2 * ((double)z.x * z.x + (double)z.y * z.y) + (double)bg[d], 1e-30);
        double in = (double)inten[d], term, factor;
        if (poisson) {
            term = h - in * log(h);
            factor = 1.0 - in / h;
        } else {
            double sh = sqrt(h), amp = sqrt(fmax(in, 0.0));
            term = (sh - amp) * (sh - amp);
            factor = 1.0 - amp / sh;
        }
        acc += on ? term : 0.0;
        if (write_chi) chi[i] = cscale(z, (float)(on ? factor * scale2 : 0.0));
    }
    acc = pxm_warp_sum(acc);
    if (PXM_LANE0) atomicAdd(cost, acc);
}

/* grad_rho* += scatter(conj(P) g) with g[a, b, c] = sum_q conj(tw[q, c mod nm] ramp[a, q]) spec[a, b, q] (F^H chi);
   with_w0: w0 += |P|^2 on the view; probe_gradient: p <- conj(rho) g (+ strength r0 P with with_r0). */
extern "C" __global__ void pxm_ml_gradient(float2* g_obj, const float2* obj, float2* p, const float2* spec,
                                           const float2* tw, const float2* ramp, float* w0, const float* r0, int n1p,
                                           int n2, int n3, int nm, int no2, int no3, int o1, int o2, int o3,
                                           int probe_gradient, int with_w0, int with_r0, float strength) {
    PXM_LOOP(i, (long long)n1p * n2 * n3) {
        pxm_at e = pxm_split(i, n2, n3);
        float2 g = pxm_unfold(spec, tw, ramp, e, nm);
        long long o = pxm_obj(e, e.c, no2, no3, o1, o2, o3);
        float2 pk = p[i];
        float2 t = cmulc(pk, g);
        g_obj[o] = make_float2(g_obj[o].x + t.x, g_obj[o].y + t.y);
        if (with_w0) w0[o] += cabs2(pk);
        if (probe_gradient) {
            float2 u = cmulc(obj[o], g);
            if (with_r0) {
                float sr = strength * r0[o];
                u.x += sr * pk.x;
                u.y += sr * pk.y;
            }
            p[i] = u;
        }
    }
}

/* (L'(0), L''(0)) of the data term along Psi(t) = Psi0 + t Psi1 + t^2 Psi2 into sums[0], sums[1] (float64);
   Psi0 = psi0[crop] if psi0_crop else psi0 (folded box); Psi2 read only with has_psi2. */
extern "C" __global__ void pxm_line_sums(const float2* psi0, const float2* psi1, const float2* psi2, const float* inten,
                                         const unsigned char* mask, const unsigned char* plane_ok, const float* bg,
                                         double* sums, int n1p, int n2, int nm, int n1, double scale2, int poisson,
                                         int psi0_crop, int has_psi2) {
    double s1 = 0.0, s2 = 0.0;
    PXM_LOOP(i, (long long)n1p * n2 * nm) {
        pxm_crop cr;
        if (!pxm_crop_at(pxm_split(i, n2, nm), n1p, n1, n2, nm, &cr)) continue;
        long long d = cr.d;
        if (!(mask[d] && plane_ok[cr.kc])) continue;
        float2 z0 = psi0_crop ? psi0[cr.ci] : psi0[i], z1 = psi1[i];
        double x0 = z0.x, y0 = z0.y, x1 = z1.x, y1 = z1.y;
        double a0 = fmax(scale2 * (x0 * x0 + y0 * y0) + (double)bg[d], 1e-30);
        double a1 = 2.0 * scale2 * (x0 * x1 + y0 * y1);
        double a2 = scale2 * (x1 * x1 + y1 * y1);
        if (has_psi2) a2 += 2.0 * scale2 * (x0 * (double)psi2[i].x + y0 * (double)psi2[i].y);
        double in = (double)inten[d];
        if (poisson) {
            double f = 1.0 - in / a0;
            s1 += a1 * f;
            s2 += 2.0 * a2 * f + in * (a1 / a0) * (a1 / a0);
        } else {
            double r0 = sqrt(a0), res = r0 - sqrt(fmax(in, 0.0)), da = a1 / (2.0 * r0);
            s1 += 2.0 * res * da;
            s2 += 2.0 * (da * da + res * (a2 - a1 * a1 / (4.0 * a0)) / r0);
        }
    }
    s1 = pxm_warp_sum(s1);
    s2 = pxm_warp_sum(s2);
    if (PXM_LANE0) {
        atomicAdd(&sums[0], s1);
        atomicAdd(&sums[1], s2);
    }
}

/* w1 += 2 Re(conj(P) dP), w2 += |dP|^2 on the view (the smoothness prior's line maps). */
extern "C" __global__ void pxm_illumination(float* w1, float* w2, const float2* p, const float2* dp, int n1p, int n2,
                                            int n3, int no2, int no3, int o1, int o2, int o3) {
    PXM_LOOP(i, (long long)n1p * n2 * n3) {
        long long o = pxm_obj(pxm_split(i, n2, n3), (int)(i % n3), no2, no3, o1, o2, o3);
        float2 pv = p[i], d = dp[i];
        w1[o] += 2.0f * (pv.x * d.x + pv.y * d.y);
        w2[o] += cabs2(d);
    }
}
"""
"""The kernels' CUDA C source (compiled once per process by ``cupy.RawModule``; ``PXM_HOST`` for the host shim)."""

BLOCK = 256
"""Threads per block of every launch (a multiple of the warp size: the warp reductions need whole warps)."""
MAX_BLOCKS = 2048
"""Upper bound on blocks per launch; the kernels' grid-stride loops cover the rest."""


def launch_grid(n: int) -> tuple[tuple[int], tuple[int]]:
    """``(grid, block)`` for ``n`` elements: ⌈n/256⌉ blocks of 256 threads, at most :data:`MAX_BLOCKS`."""
    return (max(1, min(MAX_BLOCKS, -(-int(n) // BLOCK))),), (BLOCK,)


def _fftfreq(n: int) -> np.ndarray:
    return np.fft.fftfreq(n)


def _centred(n: int) -> np.ndarray:
    """Centred index of each FFT bin of an n-point axis."""
    return (np.arange(n) + n // 2) % n


def ref_shifted_spectrum(p2f: np.ndarray, spec: np.ndarray, nb: int, n2: int, n3: int, s0: float, s1: float,
                         scale: float) -> None:
    """Reference of ``pxm_shifted_spectrum``: spec = N2·iFFT_r2(P̃2 · e^{-2πi(f2 s0 + f3 s1)}) · scale for each of the
    ``nb`` stacked P̃2.
    """
    ph = np.exp(-2j * np.pi * (_fftfreq(n2)[:, None] * float(s0) + _fftfreq(n3)[None, :] * float(s1)))
    x = p2f.reshape(nb, n2, n3).astype(np.complex128) * ph
    spec.reshape(nb, n2, n3)[...] = np.fft.ifft(x, axis=1) * (int(n2) * float(scale))


def ref_probe_update(p2f: np.ndarray, proj: np.ndarray, maxes: np.ndarray, n2: int, n3: int, s0: float, s1: float,
                     scale: float, by_vmax: int) -> None:
    """Reference of ``pxm_probe_update``: P̃2 += FFT_r2(proj) · e^{+2πi(f2 s0 + f3 s1)} · scale / den."""
    den = max(float(maxes[1]), 1e-30) if by_vmax else 1.0
    ph = np.exp(2j * np.pi * (_fftfreq(n2)[:, None] * float(s0) + _fftfreq(n3)[None, :] * float(s1)))
    y = np.fft.fft(proj.reshape(n2, n3).astype(np.complex128), axis=0)
    p2f.reshape(n2, n3)[...] += (y * ph * (float(scale) / den)).astype(np.complex64)


def ref_extrude(spec: np.ndarray, slices: np.ndarray, box: np.ndarray, nb: int, n1p: int, n2: int, n3: int) -> None:
    """Reference of ``pxm_extrude``: box[z, a, b, f] = spec[z, b, f] · slices[a, f] for the ``nb`` stacked spectra."""
    box.reshape(nb, n1p, n2, n3)[...] = spec.reshape(nb, 1, n2, n3) * slices.reshape(1, n1p, 1, n3)


def ref_fold_spectrum(p: np.ndarray, obj: np.ndarray, tw: np.ndarray, ramp: np.ndarray, spec: np.ndarray,
                      maxes: np.ndarray, n1p: int, n2: int, n3: int, nm: int, no2: int, no3: int, o1: int, o2: int,
                      o3: int) -> None:
    """Reference of ``pxm_fold_spectrum``: spec = ramp · FFT_k(Σ_u p·ρ_view) (unnormalised; ``tw`` is the DFT
    matrix e^{-2πi qk/NM}); maxes = max(maxes, (max|p|², max|ρ_view|²)).
    """
    view = _view(obj, n1p, n2, n3, no2, no3, o1, o2, o3)
    pb = p.reshape(n1p, n2, n3)
    spec.reshape(n1p, n2, nm)[...] = _folded_spectrum(pb * view, tw, ramp, n1p, n2, n3, nm)
    maxes[0] = max(float(maxes[0]), float(np.max(pb.real ** 2 + pb.imag ** 2)))
    maxes[1] = max(float(maxes[1]), float(np.max(view.real ** 2 + view.imag ** 2)))


def ref_fold_spectrum_pair(p: np.ndarray, obj: np.ndarray, dp: np.ndarray, dobj: np.ndarray, tw: np.ndarray,
                           ramp: np.ndarray, s1: np.ndarray, s2: np.ndarray, n1p: int, n2: int, n3: int, nm: int,
                           no2: int, no3: int, o1: int, o2: int, o3: int) -> None:
    """Reference of ``pxm_fold_spectrum_pair``: the folded spectra of P ΔV + ΔP V (``s1``) and ΔP ΔV (``s2``)."""
    v = _view(obj, n1p, n2, n3, no2, no3, o1, o2, o3)
    dv = _view(dobj, n1p, n2, n3, no2, no3, o1, o2, o3)
    pb, db = p.reshape(n1p, n2, n3), dp.reshape(n1p, n2, n3)
    s1.reshape(n1p, n2, nm)[...] = _folded_spectrum(pb * dv + db * v, tw, ramp, n1p, n2, n3, nm)
    s2.reshape(n1p, n2, nm)[...] = _folded_spectrum(db * dv, tw, ramp, n1p, n2, n3, nm)


def _view(obj: np.ndarray, n1p: int, n2: int, n3: int, no2: int, no3: int, o1: int, o2: int, o3: int) -> np.ndarray:
    """The box view at (o1, o2, o3) of a C-ordered object grid."""
    return obj.reshape(-1, no2, no3)[o1:o1 + n1p, o2:o2 + n2, o3:o3 + n3]


def _folded_spectrum(prod: np.ndarray, tw: np.ndarray, ramp: np.ndarray, n1p: int, n2: int, n3: int,
                     nm: int) -> np.ndarray:
    """ramp · DFT_k of Σ_u prod (the r3 fold), complex128 sums."""
    fold = prod.reshape(n1p, n2, int(n3) // int(nm), nm).sum(axis=2)
    spectrum = np.einsum("abk,qk->abq", fold.astype(np.complex128), tw.reshape(nm, nm).astype(np.complex128))
    return spectrum * ramp.reshape(n1p, 1, nm)


def ref_modulus(field: np.ndarray, inten: np.ndarray, mask: np.ndarray, plane_ok: np.ndarray, bg: np.ndarray,
                misfit: np.ndarray, n1p: int, n2: int, nm: int, n1: int, scale2: float, gamma: float) -> None:
    """Reference of ``pxm_modulus``: seed Eqs 13 and 11 on the crop rows of the folded box, 0 elsewhere."""
    f = field.reshape(n1p, n2, nm)
    pos, neg = n1 - n1 // 2, n1 // 2
    rows = np.r_[np.arange(pos), np.arange(n1p - neg, n1p)]          # FFT rows of the crop, m1 = 0.. then m1 < 0
    data_rows = np.r_[np.arange(pos) + n1 // 2, np.arange(neg)]      # their centred data rows
    q, kc = _centred(n2), _centred(nm)
    z = f[rows]
    intensity = inten.reshape(n1, n2, nm)[data_rows][:, q][:, :, kc]
    on = (mask.reshape(n1, n2, nm)[data_rows][:, q][:, :, kc]) & plane_ok[kc][None, None, :]
    b3 = bg.reshape(n1, n2, nm)
    b_old = b3[data_rows][:, q][:, :, kc]
    s2, g = np.float32(scale2), np.float32(gamma)
    sqrt_h = np.sqrt(np.maximum(s2 * (z.real ** 2 + z.imag ** 2) + b_old, np.float32(1e-30)))
    amp = np.where(on, np.sqrt(np.maximum(intensity, np.float32(0.0))), sqrt_h)
    misfit[0] += float(np.sum(((sqrt_h - amp) ** 2).astype(np.float64)))
    ratio = amp / sqrt_h
    t = (np.float32(1.0) - g) + g * ratio
    new_b = b_old * t * t
    b3[np.ix_(data_rows, q, kc)] = new_b
    out = np.zeros_like(f)
    out[rows] = z * ((ratio - np.float32(1.0)) * s2)
    f[...] = out


def ref_object_update(obj: np.ndarray, support: np.ndarray, p: np.ndarray, spec: np.ndarray, tw: np.ndarray,
                      ramp: np.ndarray, maxes: np.ndarray, n1p: int, n2: int, n3: int, nm: int, no2: int, no3: int,
                      o1: int, o2: int, o3: int, beta: float, mu: float, alpha: float, probe_gradient: int) -> None:
    """Reference of ``pxm_object_update``: Δψ = iDFT_k(conj(ramp)·spec) (unnormalised) replicated ×U, then seed
    Eqs 5, 7, 9 on the view and, if asked, Eq 8's ρ*Δψ into ``p``.
    """
    u = int(n3) // int(nm)
    sl = (slice(o1, o1 + n1p), slice(o2, o2 + n2), slice(o3, o3 + n3))
    o3d = obj.reshape(-1, no2, no3)
    v = o3d[sl].copy()
    s = support.reshape(-1, no2, no3)[sl]
    pb = p.reshape(n1p, n2, n3)
    folded = np.einsum("abq,qk->abk", (spec.reshape(n1p, n2, nm) * np.conj(ramp.reshape(n1p, 1, nm))).astype(
        np.complex128), np.conj(tw.reshape(nm, nm)).astype(np.complex128)).astype(np.complex64)
    d = np.tile(folded, (1, 1, u))
    pmax, vmax = np.float32(maxes[0]), np.float32(maxes[1])
    b32, mu32, a32 = np.float32(beta), np.float32(mu), np.float32(alpha)
    sbar = np.where(s, np.float32(0.0), mu32 * pmax)
    lam = (np.float32(1.0) - b32) * (pb.real ** 2 + pb.imag ** 2) + b32 * pmax + sbar
    o3d[sl] = v + (np.conj(pb) * d - sbar * v) / lam
    if probe_gradient:
        g = np.conj(v) * d
        if float(alpha) != 1.0:
            g = g / np.maximum((np.float32(1.0) - a32) * (v.real ** 2 + v.imag ** 2) + a32 * vmax, np.float32(1e-30))
        pb[...] = g


def ref_project(ghat: np.ndarray, slices: np.ndarray, out: np.ndarray, n1p: int, n2: int, n3: int) -> None:
    """Reference of ``pxm_project``: out[b, f] = Σ_a ĝ[a, b, f] conj(slices[a, f]) (complex128 sums)."""
    g = ghat.reshape(n1p, n2, n3).astype(np.complex128)
    out.reshape(n2, n3)[...] = np.einsum("abf,af->bf", g, np.conj(slices.reshape(n1p, n3)).astype(np.complex128))


def _crop_rows(n1p: int, n1: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the folded box inside the r1 crop, their centred data rows), FFT order (m1 ≥ 0 first)."""
    pos, neg = n1 - n1 // 2, n1 // 2
    return np.r_[np.arange(pos), np.arange(n1p - neg, n1p)], np.r_[np.arange(pos) + n1 // 2, np.arange(neg)]


def _crop_data(arr: np.ndarray, n1: int, n2: int, nm: int, data_rows: np.ndarray) -> np.ndarray:
    """A centred (N1, N2, NM) data array in the crop's FFT order."""
    return arr.reshape(n1, n2, nm)[data_rows][:, _centred(n2)][:, :, _centred(nm)]


def ref_data_term(field: np.ndarray, kept: np.ndarray, chi: np.ndarray, inten: np.ndarray, mask: np.ndarray,
                  plane_ok: np.ndarray, bg: np.ndarray, cost: np.ndarray, n1p: int, n2: int, nm: int, n1: int,
                  scale2: float, poisson: int, use_kept: int, write_kept: int, write_chi: int) -> None:
    """Reference of ``pxm_data_term``: the ML data term (Thibault & Guizar-Sicairos 2012) over the crop rows; χ into
    the crop rows of ``chi`` (its other rows untouched).
    """
    f = field.reshape(n1p, n2, nm)
    rows, data_rows = _crop_rows(int(n1p), int(n1))
    k3 = kept.reshape(n1, n2, nm) if (use_kept or write_kept) else None
    z = k3.copy() if use_kept and k3 is not None else f[rows].copy()
    if write_kept and k3 is not None:
        k3[...] = z
    on = _crop_data(mask, n1, n2, nm, data_rows) & plane_ok[_centred(nm)][None, None, :]
    inten_c = _crop_data(inten, n1, n2, nm, data_rows).astype(np.float64)
    h = np.maximum(float(scale2) * (z.real.astype(np.float64) ** 2 + z.imag.astype(np.float64) ** 2)
                   + _crop_data(bg, n1, n2, nm, data_rows), 1e-30)
    if poisson:
        term, factor = h - inten_c * np.log(h), 1.0 - inten_c / h
    else:
        amp = np.sqrt(np.maximum(inten_c, 0.0))
        term, factor = (np.sqrt(h) - amp) ** 2, 1.0 - amp / np.sqrt(h)
    cost[0] += float(np.sum(np.where(on, term, 0.0)))
    if write_chi:
        chi.reshape(n1p, n2, nm)[rows] = z * np.where(on, factor * float(scale2), 0.0).astype(np.float32)


def ref_ml_gradient(g_obj: np.ndarray, obj: np.ndarray, p: np.ndarray, spec: np.ndarray, tw: np.ndarray,
                    ramp: np.ndarray, w0: np.ndarray, r0: np.ndarray, n1p: int, n2: int, n3: int, nm: int, no2: int,
                    no3: int, o1: int, o2: int, o3: int, probe_gradient: int, with_w0: int, with_r0: int,
                    strength: float) -> None:
    """Reference of ``pxm_ml_gradient``: g = F^H χ (iDFT_k of conj(ramp)·spec, ×U), ∇ρ* += P*g on the view, w0 += |P|²,
    p ← ρ*g (+ s r0 P).
    """
    u = int(n3) // int(nm)
    sl = (slice(o1, o1 + n1p), slice(o2, o2 + n2), slice(o3, o3 + n3))
    pb = p.reshape(n1p, n2, n3)
    folded = np.einsum("abq,qk->abk", (spec.reshape(n1p, n2, nm) * np.conj(ramp.reshape(n1p, 1, nm))).astype(
        np.complex128), np.conj(tw.reshape(nm, nm)).astype(np.complex128)).astype(np.complex64)
    g = np.tile(folded, (1, 1, u))
    g_obj.reshape(-1, no2, no3)[sl] += np.conj(pb) * g
    if with_w0:
        w0.reshape(-1, no2, no3)[sl] += pb.real ** 2 + pb.imag ** 2
    if probe_gradient:
        new = np.conj(obj.reshape(-1, no2, no3)[sl]) * g
        if with_r0:
            new = new + (np.float32(strength) * r0.reshape(-1, no2, no3)[sl]) * pb
        pb[...] = new


def ref_line_sums(psi0: np.ndarray, psi1: np.ndarray, psi2: np.ndarray, inten: np.ndarray, mask: np.ndarray,
                  plane_ok: np.ndarray, bg: np.ndarray, sums: np.ndarray, n1p: int, n2: int, nm: int, n1: int,
                  scale2: float, poisson: int, psi0_crop: int, has_psi2: int) -> None:
    """Reference of ``pxm_line_sums``: (L'(0), L''(0)) of the data term along Ψ0 + tΨ1 + t²Ψ2 (float64)."""
    rows, data_rows = _crop_rows(int(n1p), int(n1))
    c128 = np.complex128
    z0 = (psi0.reshape(n1, n2, nm) if psi0_crop else psi0.reshape(n1p, n2, nm)[rows]).astype(c128)
    z1 = psi1.reshape(n1p, n2, nm)[rows].astype(c128)
    s2 = float(scale2)
    on = _crop_data(mask, n1, n2, nm, data_rows) & plane_ok[_centred(nm)][None, None, :]
    inten_c = _crop_data(inten, n1, n2, nm, data_rows).astype(np.float64)
    a0 = np.maximum(s2 * np.abs(z0) ** 2 + _crop_data(bg, n1, n2, nm, data_rows), 1e-30)
    a1 = 2.0 * s2 * (z0.conj() * z1).real
    a2 = s2 * np.abs(z1) ** 2
    if has_psi2:
        a2 = a2 + 2.0 * s2 * (z0.conj() * psi2.reshape(n1p, n2, nm)[rows].astype(c128)).real
    if poisson:
        f = 1.0 - inten_c / a0
        e1, e2 = a1 * f, 2.0 * a2 * f + inten_c * (a1 / a0) ** 2
    else:
        r0 = np.sqrt(a0)
        res = r0 - np.sqrt(np.maximum(inten_c, 0.0))
        da = a1 / (2.0 * r0)
        e1, e2 = 2.0 * res * da, 2.0 * (da ** 2 + res * (a2 - a1 ** 2 / (4.0 * a0)) / r0)
    sums[0] += float(np.sum(np.where(on, e1, 0.0)))
    sums[1] += float(np.sum(np.where(on, e2, 0.0)))


def ref_illumination(w1: np.ndarray, w2: np.ndarray, p: np.ndarray, dp: np.ndarray, n1p: int, n2: int, n3: int,
                     no2: int, no3: int, o1: int, o2: int, o3: int) -> None:
    """Reference of ``pxm_illumination``: w1 += 2Re(P*ΔP), w2 += |ΔP|² on the view."""
    sl = (slice(o1, o1 + n1p), slice(o2, o2 + n2), slice(o3, o3 + n3))
    pb, db = p.reshape(n1p, n2, n3), dp.reshape(n1p, n2, n3)
    w1.reshape(-1, no2, no3)[sl] += 2.0 * (pb.real * db.real + pb.imag * db.imag)
    w2.reshape(-1, no2, no3)[sl] += db.real ** 2 + db.imag ** 2


def _nb(a: Any) -> int:
    return int(a.nbytes) if isinstance(a, np.ndarray) else 0


def _box_view_bytes(n1p: Any, n2: Any, n3: Any, itemsize: int) -> int:
    return int(n1p) * int(n2) * int(n3) * itemsize


def _tr_shifted_spectrum(a: tuple[Any, ...]) -> tuple[int, int]:
    return _nb(a[0]), _nb(a[1])


def _tr_probe_update(a: tuple[Any, ...]) -> tuple[int, int]:
    return _nb(a[0]) + _nb(a[1]) + 8, _nb(a[0])


def _tr_extrude(a: tuple[Any, ...]) -> tuple[int, int]:
    return _nb(a[0]) + _nb(a[1]), _nb(a[2])


def _tr_fold_spectrum(a: tuple[Any, ...]) -> tuple[int, int]:
    n1p, n2, n3 = a[6], a[7], a[8]
    return _nb(a[0]) + _box_view_bytes(n1p, n2, n3, 8) + _nb(a[2]) + _nb(a[3]) + 8, _nb(a[4]) + 8


def _tr_fold_spectrum_pair(a: tuple[Any, ...]) -> tuple[int, int]:
    n1p, n2, n3 = a[8], a[9], a[10]
    return 2 * (_nb(a[0]) + _box_view_bytes(n1p, n2, n3, 8)) + _nb(a[4]) + _nb(a[5]), _nb(a[6]) + _nb(a[7])


def _tr_data_term(a: tuple[Any, ...]) -> tuple[int, int]:
    field, kept, chi, inten, mask, plane_ok, bg = a[:7]
    n1p, n1 = int(a[8]), int(a[11])
    use_kept, write_kept, write_chi = a[14], a[15], a[16]
    crop = (_nb(field) * n1 // n1p)
    read = (_nb(kept) if use_kept else crop) + _nb(inten) + _nb(mask) + _nb(plane_ok) + _nb(bg)
    return read, (_nb(kept) if write_kept else 0) + (_nb(chi) * n1 // n1p if write_chi else 0) + 8


def _tr_ml_gradient(a: tuple[Any, ...]) -> tuple[int, int]:
    n1p, n2, n3 = a[8], a[9], a[10]
    view = _box_view_bytes(n1p, n2, n3, 8)
    grad, w0, r0 = a[17], a[18], a[19]
    read = view + _nb(a[2]) + _nb(a[3]) + _nb(a[4]) + _nb(a[5]) + (view if grad else 0)   # ∇ρ*, P, …, ρ if grad
    read += (view // 2 if w0 else 0) + (view // 2 if r0 else 0)
    return read, view + (view // 2 if w0 else 0) + (_nb(a[2]) if grad else 0)


def _tr_line_sums(a: tuple[Any, ...]) -> tuple[int, int]:
    psi0, psi1, psi2, inten, mask, plane_ok, bg = a[:7]
    n1p, n1 = int(a[8]), int(a[11])
    crop = _nb(psi1) * n1 // n1p
    read = (_nb(psi0) if a[14] else crop) + crop + (crop if a[15] else 0)
    return read + _nb(inten) + _nb(mask) + _nb(plane_ok) + _nb(bg), 16


def _tr_illumination(a: tuple[Any, ...]) -> tuple[int, int]:
    n1p, n2, n3 = a[4], a[5], a[6]
    view32 = _box_view_bytes(n1p, n2, n3, 4)
    return 2 * view32 + _nb(a[2]) + _nb(a[3]), 2 * view32


def _tr_modulus(a: tuple[Any, ...]) -> tuple[int, int]:
    field, inten, mask, plane_ok, bg = a[:5]
    n1p, n1 = a[6], a[9]
    crop_part = _nb(field) * int(n1) // int(n1p)
    return crop_part + _nb(inten) + _nb(mask) + _nb(plane_ok) + _nb(bg), _nb(field) + _nb(bg) + 8


def _tr_object_update(a: tuple[Any, ...]) -> tuple[int, int]:
    n1p, n2, n3 = a[7], a[8], a[9]
    view = _box_view_bytes(n1p, n2, n3, 8)
    read = view + _box_view_bytes(n1p, n2, n3, 1) + _nb(a[2]) + _nb(a[3]) + _nb(a[4]) + _nb(a[5]) + 8
    return read, view + (_nb(a[2]) if a[-1] else 0)


def _tr_project(a: tuple[Any, ...]) -> tuple[int, int]:
    return _nb(a[0]) + _nb(a[1]), _nb(a[2])


@dataclass(frozen=True)
class KernelSpec:
    """One kernel of :data:`CUDA_SOURCE`: its NumPy reference and its device-traffic model.

    Attributes
    ----------
    name
        The ``extern "C"`` name in the source.
    reference
        NumPy function with the kernel's arguments (device arrays as NumPy arrays), writing its outputs in place.
    traffic
        ``args → (bytes read, bytes written)`` of one launch on device memory (the box view of ρ counts its
        size, not the whole object; the modulus kernel reads only the crop rows of the folded box).
    """

    name: str
    reference: Callable[..., None]
    traffic: Callable[[tuple[Any, ...]], tuple[int, int]]


KERNELS: Mapping[str, KernelSpec] = MappingProxyType({
    f"pxm_{ref.__name__.removeprefix('ref_')}": KernelSpec(f"pxm_{ref.__name__.removeprefix('ref_')}", ref, tr)
    for ref, tr in ((ref_shifted_spectrum, _tr_shifted_spectrum), (ref_probe_update, _tr_probe_update),
                    (ref_extrude, _tr_extrude), (ref_fold_spectrum, _tr_fold_spectrum),
                    (ref_fold_spectrum_pair, _tr_fold_spectrum_pair), (ref_modulus, _tr_modulus),
                    (ref_object_update, _tr_object_update), (ref_project, _tr_project),
                    (ref_data_term, _tr_data_term), (ref_ml_gradient, _tr_ml_gradient),
                    (ref_line_sums, _tr_line_sums), (ref_illumination, _tr_illumination))})
"""Every kernel of :data:`CUDA_SOURCE` by name (read-only)."""
