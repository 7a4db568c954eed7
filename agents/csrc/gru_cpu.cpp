// The time loops of metarl's fused CPU GRU (metarl/agents/gru.py), compiled on first use.
//
// Each step of the Python loop makes one product and five or six element-wise calls on [B, G] slices; each call
// costs a few microseconds of dispatch and strided iteration for ~5k elements.  Here each step is the same
// product (ATen's addmm/mm, unchanged) plus ONE pass over the step's rows that computes every gate with AVX2
// (exp from the SLEEF build inside libtorch_cpu).  The maths, buffers and layouts are those of
// _GRUSequence in gru.py: xp/gh/dgh/h_in in the product dtype T (float or bfloat16), the state and gates float32.
#include <torch/extension.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <immintrin.h>

extern "C" __m256 Sleef_expf8_u10(__m256);

namespace {

// x @ W.T + b through oneDNN with W reordered once (mkldnn::_reorder_linear_weight, done by the caller): the
// same numbers as addmm, without addmm's reorder of the bfloat16 weight on every call (about 9 of its 27 us here).
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                         c10::string_view, c10::List<std::optional<at::Scalar>>,
                                         std::optional<c10::string_view>)>();
  return op.call(x, packed, bias, "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
}

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const at::BFloat16* p) {
  __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}
inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline void store8(at::BFloat16* p, __m256 v) {  // round to nearest even, as c10::BFloat16 does (finite values)
  __m256i x = _mm256_castps_si256(v);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  x = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}
inline __m256 sigmoid8(__m256 x) {  // 1 / (1 + e^-x)
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, Sleef_expf8_u10(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}
inline __m256 tanh8(__m256 x) {  // 2 σ(2x) - 1: SLEEF's own tanh costs five of its exps; this is within about 1e-7 of it (absolute)
  const __m256 two = _mm256_set1_ps(2.0f);
  return _mm256_fmsub_ps(two, sigmoid8(_mm256_mul_ps(two, x)), _mm256_set1_ps(1.0f));
}

template <typename T>
void forward_impl(const at::Tensor& xp, at::Tensor& hs, at::Tensor& h_in, at::Tensor& gh, at::Tensor& rz,
                  at::Tensor& n, const at::Tensor& wt, const at::Tensor& bias, bool separate_in,
                  const std::optional<at::Tensor>& packed) {
  const int64_t C = xp.size(0), B = xp.size(1), G = hs.size(2), G3 = 3 * G;
  const T* x = xp.data_ptr<T>();
  T* g = gh.data_ptr<T>();
  const std::optional<at::Tensor> bias_opt(bias);
  T* hin = separate_in ? h_in.data_ptr<T>() : nullptr;
  float* rzp = rz.data_ptr<float>();
  float* np = n.data_ptr<float>();
  float* h = hs.data_ptr<float>();
  for (int64_t t = 0; t < C; ++t) {
    at::Tensor h_t = separate_in ? h_in.select(0, t) : hs.select(0, t);
    at::Tensor y;  // W_hh h + b_hh: written into gh[t] by addmm, or returned by the packed product and copied
    if (packed.has_value()) {
      y = packed_linear(h_t, *packed, bias_opt);
    } else {
      at::Tensor gh_t = gh.select(0, t);
      at::addmm_out(gh_t, bias, h_t, wt);
    }
    const T* xt = x + t * B * G3;
    T* gw = g + t * B * G3;
    const T* gt = packed.has_value() ? y.data_ptr<T>() : gw;
    float* rzt = rzp + t * B * 2 * G;
    float* nt = np + t * B * G;
    const float* ht = h + t * B * G;
    float* h2 = h + (t + 1) * B * G;
    T* hin2 = (hin != nullptr && t + 1 < C) ? hin + (t + 1) * B * G : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      const T* xb = xt + b * G3;
      const T* gb = gt + b * G3;
      T* gwb = gw + b * G3;
      for (int64_t j = 0; j < G; j += 8) {
        __m256 gr = load8(gb + j), gz = load8(gb + G + j), gn = load8(gb + 2 * G + j);
        if (gb != gwb) {  // the packed product's result, kept for the backward
          store8(gwb + j, gr);
          store8(gwb + G + j, gz);
          store8(gwb + 2 * G + j, gn);
        }
        __m256 r = sigmoid8(_mm256_add_ps(load8(xb + j), gr));
        __m256 z = sigmoid8(_mm256_add_ps(load8(xb + G + j), gz));
        __m256 nn = tanh8(_mm256_fmadd_ps(r, gn, load8(xb + 2 * G + j)));
        __m256 hv = _mm256_loadu_ps(ht + b * G + j);
        __m256 hn = _mm256_fmadd_ps(z, _mm256_sub_ps(hv, nn), nn);  // n + z (h - n)
        _mm256_storeu_ps(rzt + b * 2 * G + j, r);
        _mm256_storeu_ps(rzt + b * 2 * G + G + j, z);
        _mm256_storeu_ps(nt + b * G + j, nn);
        _mm256_storeu_ps(h2 + b * G + j, hn);
        if (hin2 != nullptr) store8(hin2 + b * G + j, hn);
      }
    }
  }
}

template <typename T>
at::Tensor backward_impl(const at::Tensor& dout, const at::Tensor& hs, const at::Tensor& gh, const at::Tensor& rz,
                         const at::Tensor& n, const at::Tensor& w, at::Tensor& dgh, at::Tensor& dxp,
                         const std::optional<at::Tensor>& packed) {
  const int64_t C = n.size(0), B = n.size(1), G = n.size(2), G3 = 3 * G;
  const float* d_out = dout.data_ptr<float>();
  const float* h = hs.data_ptr<float>();
  const T* g = gh.data_ptr<T>();
  const float* rzp = rz.data_ptr<float>();
  const float* np = n.data_ptr<float>();
  T* dg = dgh.data_ptr<T>();
  T* dx = dxp.data_ptr<T>();
  at::Tensor mm = at::zeros({B, G}, gh.options());  // d(gh) W_hh of the step after
  at::Tensor dhz = at::zeros({B, G}, hs.options());  // D z of the step after
  T* mmp = mm.data_ptr<T>();
  float* dhzp = dhz.data_ptr<float>();
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t t = C - 1; t >= 0; --t) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = (t * B + b);
      const float* rb = rzp + row * 2 * G;
      const float* nb = np + row * G;
      const float* hb = h + row * G;  // the state entering step t
      const T* gb = g + row * G3;
      T* dgb = dg + row * G3;
      T* dxb = dx + row * G3;
      for (int64_t j = 0; j < G; j += 8) {
        // D: the gradient reaching h' of step t (from the output, and from step t + 1 through W_hh h and z h)
        __m256 D = _mm256_add_ps(_mm256_loadu_ps(d_out + row * G + j),
                                 _mm256_add_ps(load8(mmp + b * G + j), _mm256_loadu_ps(dhzp + b * G + j)));
        __m256 r = _mm256_loadu_ps(rb + j), z = _mm256_loadu_ps(rb + G + j), nn = _mm256_loadu_ps(nb + j);
        __m256 omz = _mm256_sub_ps(one, z);
        __m256 Da = _mm256_mul_ps(D, _mm256_mul_ps(omz, _mm256_fnmadd_ps(nn, nn, one)));  // D (1 - z)(1 - n²)
        __m256 d_r = _mm256_mul_ps(_mm256_mul_ps(Da, load8(gb + 2 * G + j)), _mm256_mul_ps(r, _mm256_sub_ps(one, r)));
        __m256 d_z = _mm256_mul_ps(_mm256_mul_ps(D, _mm256_sub_ps(_mm256_loadu_ps(hb + j), nn)), _mm256_mul_ps(z, omz));
        store8(dgb + j, d_r);
        store8(dgb + G + j, d_z);
        store8(dgb + 2 * G + j, _mm256_mul_ps(Da, r));
        store8(dxb + j, d_r);
        store8(dxb + G + j, d_z);
        store8(dxb + 2 * G + j, Da);
        _mm256_storeu_ps(dhzp + b * G + j, _mm256_mul_ps(D, z));
      }
    }
    if (packed.has_value()) {  // d(gh) @ W_hh = linear(d(gh), W_hh.T), the weight reordered once
      mm = packed_linear(dgh.select(0, t), *packed, std::nullopt);
      mmp = mm.data_ptr<T>();
    } else {
      at::mm_out(mm, dgh.select(0, t), w);
    }
  }
  return mm.to(at::kFloat).add_(dhz);
}

}  // namespace

void forward_loop(const at::Tensor& xp, at::Tensor hs, at::Tensor h_in, at::Tensor gh, at::Tensor rz, at::Tensor n,
                  const at::Tensor& wt, const at::Tensor& bias, bool separate_in,
                  const std::optional<at::Tensor>& packed) {
  TORCH_CHECK(hs.size(2) % 8 == 0, "the native GRU needs a hidden size divisible by 8");
  if (xp.scalar_type() == at::kBFloat16) {
    forward_impl<at::BFloat16>(xp, hs, h_in, gh, rz, n, wt, bias, separate_in, packed);
  } else {
    TORCH_CHECK(xp.scalar_type() == at::kFloat, "the native GRU takes float32 or bfloat16 products");
    TORCH_CHECK(!packed.has_value(), "the packed product is bfloat16 only");
    forward_impl<float>(xp, hs, h_in, gh, rz, n, wt, bias, separate_in, std::nullopt);
  }
}

at::Tensor backward_loop(const at::Tensor& dout, const at::Tensor& hs, const at::Tensor& gh, const at::Tensor& rz,
                         const at::Tensor& n, const at::Tensor& w, at::Tensor dgh, at::Tensor dxp,
                         const std::optional<at::Tensor>& packed) {
  TORCH_CHECK(n.size(2) % 8 == 0, "the native GRU needs a hidden size divisible by 8");
  if (gh.scalar_type() == at::kBFloat16) return backward_impl<at::BFloat16>(dout, hs, gh, rz, n, w, dgh, dxp, packed);
  TORCH_CHECK(!packed.has_value(), "the packed product is bfloat16 only");
  return backward_impl<float>(dout, hs, gh, rz, n, w, dgh, dxp, std::nullopt);
}

at::Tensor packed_product(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias) {
  return packed_linear(x, packed, bias);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // the loops need no Python: release the GIL, so that --overlap's background collect runs beside the update
  m.def("forward_loop", &forward_loop, pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("backward_loop", &backward_loop, pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("packed_product", &packed_product, pybind11::call_guard<pybind11::gil_scoped_release>());
}
