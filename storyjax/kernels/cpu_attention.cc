// Multi-head attention for XLA:CPU through the XLA FFI: softmax(q·kᵀ·scale)·v with a key mask, forward and
// backward, one (batch, head) pair per work item on XLA's intra-op thread pool. Built by cpu_attention.py.
//
// q (B, Lq, H, D), k/v (B, Lk, H, D) float32, key_mask (B, Lk) bool, dropout (3,) uint32: seed₀, seed₁ and the
// keep threshold of storyjax/layers/dropout.py, whose mask this reproduces bit for bit (element (b, h, i, j) of
// the probabilities kept iff fmix32(fmix32(index + seed₀) ^ seed₁) < threshold, kept ones scaled by
// 1/keep_probability; keep_probability 1 turns dropout off). The forward also returns the normalised, undropped
// probabilities (B, H, Lq, Lk), which the backward reads instead of recomputing them. Masked keys get no weight;
// a query with no valid key attends uniformly to all keys and passes no gradient to the logits (as a softmax
// over logits set to the float minimum where masked does).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Shape {
  int64_t batch, num_queries, num_keys, heads, dim;
  int64_t query_row() const { return heads * dim; }  // stride between tokens in q, k, v and their gradients
};

// Runs body(item) for every item in [0, count): the caller works too, and helpers from the pool take items from
// the same counter. The caller waits only for items already taken, so a busy pool cannot deadlock it; helpers
// that start after the last item find nothing to do.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t count, const Body& body) {
  struct Counter {
    std::atomic<int64_t> next{0}, finished{0};
  };
  auto counter = std::make_shared<Counter>();
  auto run = [counter, count](const Body& work) {
    for (int64_t item; (item = counter->next.fetch_add(1)) < count;) {
      work(item);
      counter->finished.fetch_add(1);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), count - 1);
  auto shared_body = std::make_shared<Body>(body);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([run, shared_body] { run(*shared_body); });
  run(body);
  while (counter->finished.load() < count) std::this_thread::yield();
}

int64_t RoundUp(int64_t n) { return (n + 7) / 8 * 8; }

// Eight floats in one vector register (AVX) or two (SSE); the compiler maps the arithmetic.
typedef float Vec __attribute__((vector_size(32)));
inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }

// c (m, n) = op(a) (m, k) · b (k, n), all row-major, n a multiple of 8; op(a)(i, l) = a[i·lda + l], or
// a[l·lda + i] when kTransposed. Register tiles of 4 rows × 16 columns, then 8 columns, then single rows.
template <bool kTransposed>
void MatMul(int64_t m, int64_t n, int64_t k, const float* __restrict a, int64_t lda, const float* __restrict b,
            int64_t ldb, float* __restrict c, int64_t ldc) {
  auto at = [&](int64_t i, int64_t l) { return kTransposed ? a[l * lda + i] : a[i * lda + l]; };
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
      Vec acc[4][2] = {};
      for (int64_t l = 0; l < k; ++l) {
        const Vec b0 = Load(b + l * ldb + j), b1 = Load(b + l * ldb + j + 8);
        for (int r = 0; r < 4; ++r) {
          const float x = at(i + r, l);
          acc[r][0] += x * b0;
          acc[r][1] += x * b1;
        }
      }
      for (int r = 0; r < 4; ++r) Store(c + (i + r) * ldc + j, acc[r][0]), Store(c + (i + r) * ldc + j + 8, acc[r][1]);
    }
    for (; j < n; j += 8) {
      Vec acc[4] = {};
      for (int64_t l = 0; l < k; ++l) {
        const Vec b0 = Load(b + l * ldb + j);
        for (int r = 0; r < 4; ++r) acc[r] += at(i + r, l) * b0;
      }
      for (int r = 0; r < 4; ++r) Store(c + (i + r) * ldc + j, acc[r]);
    }
  }
  for (; i < m; ++i)
    for (int64_t j = 0; j < n; j += 8) {
      Vec acc = {};
      for (int64_t l = 0; l < k; ++l) acc += at(i, l) * Load(b + l * ldb + j);
      Store(c + i * ldc + j, acc);
    }
}

// rows (n, padded_dim) ← one head's rows of a token-major (n, heads·dim) buffer, times `scale`, zero-padded.
void Gather(const float* source, int64_t n, int64_t stride, int64_t dim, float scale, float* rows) {
  const int64_t padded = RoundUp(dim);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < padded; ++d) rows[i * padded + d] = d < dim ? source[i * stride + d] * scale : 0.f;
}

// columns (padded_dim, padded_n) ← the same rows transposed, zero-padded.
void GatherTransposed(const float* source, int64_t n, int64_t stride, int64_t dim, float* columns) {
  const int64_t padded_n = RoundUp(n);
  std::fill(columns, columns + RoundUp(dim) * padded_n, 0.f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) columns[d * padded_n + i] = source[i * stride + d];
}

void Scatter(const float* rows, int64_t n, int64_t stride, int64_t dim, float* target) {
  const int64_t padded = RoundUp(dim);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) target[i * stride + d] = rows[i * padded + d];
}

// exp(x) for x ≤ 0 (Cephes' expf: range reduction by ln 2, degree-5 polynomial, 2ⁿ from the exponent bits),
// written without branches or library calls so the compiler vectorises the loops that use it; x < −87 gives
// about 1e−38 instead of 0.
inline float ExpNonPositive(float x) {
  x = std::max(x, -87.f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = std::fma(-n, 0.693359375f, x);
  r = std::fma(n, 2.12194440e-4f, r);
  float y = 1.9875691500e-4f;
  y = std::fma(y, r, 1.3981999507e-3f);
  y = std::fma(y, r, 8.3334519073e-3f);
  y = std::fma(y, r, 4.1665795894e-2f);
  y = std::fma(y, r, 1.6666665459e-1f);
  y = std::fma(y, r, 5.0000001201e-1f);
  y = std::fma(y, r * r, r + 1.f);
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

// probabilities (padded_n) ← softmax of logits over the valid keys (0 elsewhere); uniform over the n real keys
// when none is valid. May be computed in place.
inline void MaskedSoftmax(const float* logits, const float* __restrict valid, bool any_valid, int64_t padded_n,
                          int64_t n, float* probabilities) {
  if (!any_valid) {
    for (int64_t j = 0; j < padded_n; ++j) probabilities[j] = j < n ? 1.f / static_cast<float>(n) : 0.f;
    return;
  }
  Vec running_max = Vec{} - INFINITY;  // padded_n is a multiple of 8
  for (int64_t j = 0; j < padded_n; j += 8) {
    const Vec masked = Load(valid + j) > 0.f ? Load(logits + j) : Vec{} - INFINITY;
    running_max = masked > running_max ? masked : running_max;
  }
  float max_logit = running_max[0];
  for (int lane = 1; lane < 8; ++lane) max_logit = std::max(max_logit, running_max[lane]);
  float sum = 0.f;
  for (int64_t j = 0; j < padded_n; ++j) {
    probabilities[j] = valid[j] * ExpNonPositive(std::min(logits[j] - max_logit, 0.f));
    sum += probabilities[j];
  }
  const float inverse = 1.f / sum;
  for (int64_t j = 0; j < padded_n; ++j) probabilities[j] *= inverse;
}

// MurmurHash3's 32-bit finaliser, as storyjax/layers/dropout.py's _finalise.
inline uint32_t Finalise(uint32_t bits) {
  bits ^= bits >> 16;
  bits *= 0x85EBCA6Bu;
  bits ^= bits >> 13;
  bits *= 0xC2B2AE35u;
  return bits ^ (bits >> 16);
}

struct DropoutSpec {
  uint32_t seed0, seed1, threshold;
  float keep_probability;
  bool active() const { return keep_probability < 1.f; }
  float scale() const { return keep_probability > 0.f ? 1.f / keep_probability : 0.f; }
  // dropped (n) ← probabilities (n) with the mask of the row whose first element has flat index `first`.
  void Apply(uint32_t first, const float* __restrict probabilities, int64_t n, float* __restrict dropped) const {
    const float scale = this->scale();
    for (int64_t j = 0; j < n; ++j) {
      const uint32_t bits = Finalise(Finalise(first + static_cast<uint32_t>(j) + seed0) ^ seed1);
      dropped[j] = bits < threshold ? probabilities[j] * scale : 0.f;
    }
  }
};

DropoutSpec ReadDropout(const ffi::Buffer<ffi::U32>& dropout, float keep_probability) {
  const uint32_t* words = dropout.typed_data();
  return {words[0], words[1], words[2], keep_probability};
}

// Per-thread buffers for one (example, head) pair, sized for the largest call so far.
struct Scratch {
  std::vector<float> buffers[8];
  std::vector<float> valid;
  float* Buffer(int index, int64_t size) {
    if (static_cast<int64_t>(buffers[index].size()) < size) buffers[index].resize(size);
    return buffers[index].data();
  }
};

// valid (padded Lk) ← the key mask of one example as 0/1, 0 in the padding; returns whether any key is valid.
bool ValidKeys(const bool* mask, int64_t n, std::vector<float>& valid) {
  valid.assign(RoundUp(n), 0.f);
  bool any = false;
  for (int64_t j = 0; j < n; ++j) valid[j] = mask[j] ? 1.f : 0.f, any |= mask[j];
  return any;
}

// shape ← the sizes of q (B, Lq, H, D), k/v (B, Lk, H, D) and key_mask (B, Lk), or an error if they disagree.
ffi::Error ReadShape(const ffi::Buffer<ffi::F32>& query, const ffi::Buffer<ffi::F32>& key,
                     const ffi::Buffer<ffi::F32>& value, const ffi::Buffer<ffi::PRED>& key_mask, Shape& shape) {
  const auto q = query.dimensions(), k = key.dimensions(), v = value.dimensions(), m = key_mask.dimensions();
  const bool ok = q.size() == 4 && k.size() == 4 && v.size() == 4 && m.size() == 2 && k[0] == q[0] &&
                  k[2] == q[2] && k[3] == q[3] && v[0] == q[0] && v[1] == k[1] && v[2] == q[2] && v[3] == q[3] &&
                  m[0] == q[0] && m[1] == k[1];
  if (!ok) return ffi::Error::InvalidArgument("cpu attention: q (B, Lq, H, D), k/v (B, Lk, H, D), key_mask (B, Lk)");
  shape = {q[0], q[1], k[1], q[2], q[3]};
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> query, ffi::Buffer<ffi::F32> key,
                   ffi::Buffer<ffi::F32> value, ffi::Buffer<ffi::PRED> key_mask, ffi::Buffer<ffi::U32> dropout,
                   float scale, float keep_probability, ffi::ResultBuffer<ffi::F32> out,
                   ffi::ResultBuffer<ffi::F32> probabilities) {
  Shape s;
  if (ffi::Error error = ReadShape(query, key, value, key_mask, s); !error.success()) return error;
  const float *q = query.typed_data(), *k = key.typed_data(), *v = value.typed_data();
  const bool* mask = key_mask.typed_data();
  float *o = out->typed_data(), *p = probabilities->typed_data();
  const int64_t stride = s.query_row();
  const DropoutSpec drop = ReadDropout(dropout, keep_probability);
  const int64_t dim = RoundUp(s.dim), keys = RoundUp(s.num_keys);
  ParallelFor(pool, s.batch * s.heads, [&](int64_t item) {
    thread_local Scratch scratch;
    const int64_t b = item / s.heads, h = item % s.heads;
    float* scaled_q = scratch.Buffer(0, s.num_queries * dim);
    float* k_columns = scratch.Buffer(1, dim * keys);
    float* v_rows = scratch.Buffer(2, keys * dim);
    float* logits = scratch.Buffer(3, s.num_queries * keys);
    float* attended = scratch.Buffer(4, s.num_queries * dim);
    Gather(q + b * s.num_queries * stride + h * s.dim, s.num_queries, stride, s.dim, scale, scaled_q);
    GatherTransposed(k + b * s.num_keys * stride + h * s.dim, s.num_keys, stride, s.dim, k_columns);
    Gather(v + b * s.num_keys * stride + h * s.dim, s.num_keys, stride, s.dim, 1.f, v_rows);
    const bool any_valid = ValidKeys(mask + b * s.num_keys, s.num_keys, scratch.valid);
    MatMul<false>(s.num_queries, keys, dim, scaled_q, dim, k_columns, keys, logits, keys);
    for (int64_t i = 0; i < s.num_queries; ++i) {
      float* row = logits + i * keys;
      const int64_t first = (item * s.num_queries + i) * s.num_keys;
      MaskedSoftmax(row, scratch.valid.data(), any_valid, keys, s.num_keys, row);
      std::memcpy(p + first, row, s.num_keys * sizeof(float));
      if (drop.active()) drop.Apply(static_cast<uint32_t>(first), row, s.num_keys, row);
    }
    MatMul<false>(s.num_queries, dim, s.num_keys, logits, keys, v_rows, dim, attended, dim);
    Scatter(attended, s.num_queries, stride, s.dim, o + b * s.num_queries * stride + h * s.dim);
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> query, ffi::Buffer<ffi::F32> key,
                    ffi::Buffer<ffi::F32> value, ffi::Buffer<ffi::PRED> key_mask, ffi::Buffer<ffi::U32> dropout,
                    ffi::Buffer<ffi::F32> probabilities, ffi::Buffer<ffi::F32> out_grad, float scale,
                    float keep_probability, ffi::ResultBuffer<ffi::F32> query_grad, ffi::ResultBuffer<ffi::F32> key_grad,
                    ffi::ResultBuffer<ffi::F32> value_grad) {
  Shape s;
  if (ffi::Error error = ReadShape(query, key, value, key_mask, s); !error.success()) return error;
  const float *q = query.typed_data(), *k = key.typed_data(), *v = value.typed_data();
  const float *p = probabilities.typed_data(), *dout = out_grad.typed_data();
  const bool* mask = key_mask.typed_data();
  float *dq = query_grad->typed_data(), *dk = key_grad->typed_data(), *dv = value_grad->typed_data();
  const int64_t stride = s.query_row();
  const DropoutSpec drop = ReadDropout(dropout, keep_probability);
  const int64_t dim = RoundUp(s.dim), keys = RoundUp(s.num_keys);
  ParallelFor(pool, s.batch * s.heads, [&](int64_t item) {
    thread_local Scratch scratch;
    const int64_t b = item / s.heads, h = item % s.heads;
    const int64_t query_offset = b * s.num_queries * stride + h * s.dim, key_offset = b * s.num_keys * stride + h * s.dim;
    float* q_rows = scratch.Buffer(0, s.num_queries * dim);
    float* k_rows = scratch.Buffer(1, keys * dim);
    float* v_columns = scratch.Buffer(2, dim * keys);
    float* dout_rows = scratch.Buffer(3, s.num_queries * dim);
    float* probabilities = scratch.Buffer(4, s.num_queries * keys);
    float* score_grad = scratch.Buffer(5, s.num_queries * keys);
    float* grad_rows = scratch.Buffer(6, std::max(s.num_queries, keys) * dim);
    // The probabilities that weighed the values: dropped ones where dropout is on (then dP is dropped alike).
    float* weights = drop.active() ? scratch.Buffer(7, s.num_queries * keys) : probabilities;
    Gather(q + query_offset, s.num_queries, stride, s.dim, 1.f, q_rows);
    Gather(k + key_offset, s.num_keys, stride, s.dim, 1.f, k_rows);
    std::fill(k_rows + s.num_keys * dim, k_rows + keys * dim, 0.f);
    GatherTransposed(v + key_offset, s.num_keys, stride, s.dim, v_columns);
    Gather(dout + query_offset, s.num_queries, stride, s.dim, 1.f, dout_rows);
    ValidKeys(mask + b * s.num_keys, s.num_keys, scratch.valid);
    const float* valid = scratch.valid.data();
    MatMul<false>(s.num_queries, keys, dim, dout_rows, dim, v_columns, keys, score_grad, keys);  // dP = dO·Vᵀ
    for (int64_t i = 0; i < s.num_queries; ++i) {
      float* __restrict row = probabilities + i * keys;
      float* __restrict grad = score_grad + i * keys;
      const int64_t first = (item * s.num_queries + i) * s.num_keys;
      std::memcpy(row, p + first, s.num_keys * sizeof(float));
      std::fill(row + s.num_keys, row + keys, 0.f);
      if (drop.active()) {
        float* __restrict weight_row = weights + i * keys;
        drop.Apply(static_cast<uint32_t>(first), row, keys, weight_row);  // padded columns: P = 0
        // dP ⊙ mask / keep without hashing again: the kept non-zero P mark the mask, and where P = 0 the gradient
        // is never read (dS = P ⊙ (dP − Σ P·dP)).
        const float scale = drop.scale();
        for (int64_t j = 0; j < keys; ++j) grad[j] = weight_row[j] != 0.f ? grad[j] * scale : 0.f;
      }
      float mean_grad = 0.f;
      for (int64_t j = 0; j < keys; ++j) mean_grad += row[j] * grad[j];
      for (int64_t j = 0; j < keys; ++j) grad[j] = valid[j] * row[j] * (grad[j] - mean_grad) * scale;  // dS
    }
    MatMul<false>(s.num_queries, dim, keys, score_grad, keys, k_rows, dim, grad_rows, dim);  // dQ = dS·K
    Scatter(grad_rows, s.num_queries, stride, s.dim, dq + query_offset);
    MatMul<true>(s.num_keys, dim, s.num_queries, score_grad, keys, q_rows, dim, grad_rows, dim);  // dK = dSᵀ·Q
    Scatter(grad_rows, s.num_keys, stride, s.dim, dk + key_offset);
    MatMul<true>(s.num_keys, dim, s.num_queries, weights, keys, dout_rows, dim, grad_rows, dim);  // dV = Pᵀ·dO
    Scatter(grad_rows, s.num_keys, stride, s.dim, dv + key_offset);
  });
  return ffi::Error::Success();
}

// The arguments both handlers start with: the thread pool, q, k, v, the key mask and the dropout words.
auto BindAttentionInputs() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::PRED>>()
      .Arg<ffi::Buffer<ffi::U32>>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StoryjaxAttentionForward, Forward,
                              BindAttentionInputs()
                                  .Attr<float>("scale")
                                  .Attr<float>("keep_probability")
                                  .Ret<ffi::Buffer<ffi::F32>>()    // out
                                  .Ret<ffi::Buffer<ffi::F32>>());  // probabilities

XLA_FFI_DEFINE_HANDLER_SYMBOL(StoryjaxAttentionBackward, Backward,
                              BindAttentionInputs()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // probabilities
                                  .Arg<ffi::Buffer<ffi::F32>>()  // out_grad
                                  .Attr<float>("scale")
                                  .Attr<float>("keep_probability")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
