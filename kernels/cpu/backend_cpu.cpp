// The cpu backend: one packed weight layout (see cpu_internal.hpp), an AVX-512 VNNI, an AVX2
// and a scalar kernel chosen at run time, a small persistent thread pool, fused epilogue,
// im2col conv2d. Every path computes the reference's exact integer arithmetic (int32 sums wrap
// modulo 2^32 like the reference's; integer sums do not depend on order), so the output bytes
// equal the reference backend's on every path, thread count and blocking.
#include "kernels/cpu/backend_cpu.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_internal.hpp"
#include "kernels/cpu/cpu_isa.hpp"

namespace haca::kernels {
namespace cpu_detail {

int a_chunk_rows(int kp) {
  int rows = (256 * 1024) / std::max(kp, 4);
  rows -= rows % 16;
  return std::clamp(rows, 16, 512);
}

std::int8_t epilogue1(std::int32_t acc, std::int32_t bias, const out_desc& out) {
  return bias_requant_relu(acc, bias, out.multiplier, out.shift, out.relu);
}

void run_scalar(const std::int8_t* a, std::size_t lda, int rows, int row_base, const packed_b& b, int blk0,
                int blk1, const out_desc& out) {
  const int kp = b.kp, k = b.k;
  for (int r = 0; r < rows; ++r) {
    const std::int8_t* ar = a + static_cast<std::size_t>(r) * lda;
    const std::size_t row = static_cast<std::size_t>(row_base + r);
    for (int blk = blk0; blk < blk1; ++blk) {
      const std::int8_t* bp = b.data + static_cast<std::size_t>(blk) * 16 * kp;
      std::uint32_t acc[16] = {};
      for (int p = 0; p < k; ++p) {
        const std::int8_t* g = bp + static_cast<std::size_t>(p / 4) * 64 + (p % 4);
        const std::int32_t x = ar[p];
        for (int c = 0; c < 16; ++c) acc[c] += static_cast<std::uint32_t>(x * g[c * 4]);
      }
      const int col0 = blk * 16;
      const int valid = std::min(16, b.n - col0);
      for (int c = 0; c < valid; ++c) {
        const auto v = static_cast<std::int32_t>(acc[c]);
        const std::size_t j = static_cast<std::size_t>(col0 + c);
        switch (out.kind) {
        case out_kind::s32: out.c[row * out.ld + j] = v; break;
        case out_kind::i8: out.o[row * out.ld + j] = epilogue1(v, out.bias[j], out); break;
        case out_kind::i8_transposed: out.o[j * out.ld + row] = epilogue1(v, out.bias[j], out); break;
        }
      }
    }
  }
}

namespace {

// ---- ISA selection -------------------------------------------------------------------------

bool cpu_supports(cpu_isa isa) {
  switch (isa) {
  case cpu_isa::scalar: return true;
  case cpu_isa::avx2: return __builtin_cpu_supports("avx2");
  case cpu_isa::avx512vnni:
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }
  return false;
}

cpu_isa detect() {
  if (cpu_supports(cpu_isa::avx512vnni)) return cpu_isa::avx512vnni;
  if (cpu_supports(cpu_isa::avx2)) return cpu_isa::avx2;
  return cpu_isa::scalar;
}

std::atomic<int>& isa_slot() {
  static std::atomic<int> slot = [] {
    cpu_isa isa = detect();
    if (const char* env = std::getenv("HACA_CPU_ISA")) {
      const std::string s = env;
      cpu_isa want = isa;
      if (s == "scalar") want = cpu_isa::scalar;
      else if (s == "avx2") want = cpu_isa::avx2;
      else if (s == "avx512" || s == "avx512vnni") want = cpu_isa::avx512vnni;
      if (cpu_supports(want)) isa = want;
    }
    return static_cast<int>(isa);
  }();
  return slot;
}

// ---- Thread pool ---------------------------------------------------------------------------
// nthreads - 1 persistent workers; run(fn) calls fn(0) on the caller and fn(t) on worker t.
// Busy (another caller is using it) or nested use runs every fn(t) on the caller instead.
// The pool lives for the whole process (never destroyed: no shutdown-order issues).

thread_local bool t_in_pool_task = false;

class thread_pool {
public:
  explicit thread_pool(int n) : n_(n) {
    for (int i = 1; i < n_; ++i) std::thread([this, i] { worker(i); }).detach();
  }
  int size() const { return n_; }

  void run(const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
    if (n_ == 1 || t_in_pool_task || !lock.owns_lock()) {
      for (int t = 0; t < n_; ++t) fn(t);
      return;
    }
    job_ = &fn;
    pending_.store(n_ - 1, std::memory_order_relaxed);
    gen_.fetch_add(1, std::memory_order_release);
    gen_.notify_all();
    t_in_pool_task = true;
    fn(0);
    t_in_pool_task = false;
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin < 4000) {
        __builtin_ia32_pause();
      } else {
        const int p = pending_.load(std::memory_order_acquire);
        if (p != 0) pending_.wait(p, std::memory_order_acquire);
      }
    }
    job_ = nullptr;
  }

private:
  void worker(int id) {
    t_in_pool_task = true;
    std::uint64_t seen = 0;
    for (;;) {
      for (int spin = 0; gen_.load(std::memory_order_acquire) == seen; ++spin) {
        if (spin < 20000) __builtin_ia32_pause();
        else gen_.wait(seen, std::memory_order_acquire);
      }
      seen = gen_.load(std::memory_order_acquire);
      (*job_)(id);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
    }
  }

  int n_;
  std::mutex mu_;
  std::atomic<std::uint64_t> gen_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int)>* job_ = nullptr;
};

int thread_count() {
  static const int n = [] {
    int t = static_cast<int>(std::thread::hardware_concurrency());
    if (const char* env = std::getenv("HACA_CPU_THREADS")) t = std::atoi(env);
    return std::clamp(t, 1, 256);
  }();
  return n;
}

thread_pool& pool() {
  static thread_pool* p = new thread_pool(thread_count());
  return *p;
}

// ---- GEMM driver ---------------------------------------------------------------------------

std::vector<unsigned char>& scratch_buffer(std::size_t bytes) {
  thread_local std::vector<unsigned char> buf;
  if (buf.size() < bytes) buf.resize(bytes);
  return buf;
}

void run_range(const std::int8_t* a, std::size_t lda, int rows, int row_base, const packed_b& b, int blk0, int blk1,
               const out_desc& out, cpu_isa isa) {
  if (rows <= 0 || blk0 >= blk1) return;
  // + 64: the AVX-512 packing may store up to 64 bytes past the last row.
  const std::size_t chunk = static_cast<std::size_t>(std::min(a_chunk_rows(b.kp), rows)) * b.kp + 64;
  switch (isa) {
  case cpu_isa::avx512vnni: run_avx512(a, lda, rows, row_base, b, blk0, blk1, out, scratch_buffer(chunk).data()); break;
  case cpu_isa::avx2: run_avx2(a, lda, rows, row_base, b, blk0, blk1, out, scratch_buffer(chunk * 2).data()); break;
  case cpu_isa::scalar: run_scalar(a, lda, rows, row_base, b, blk0, blk1, out); break;
  }
}

// Below this many multiply-adds an op runs on the caller's thread (waking a worker costs more).
constexpr double parallel_min_macs = 1.5e6;

void gemm(const std::int8_t* a, std::size_t lda, int m, int row_base, const packed_b& b, const out_desc& out,
          bool allow_threads) {
  if (m <= 0 || b.n <= 0) return;
  const auto isa = static_cast<cpu_isa>(isa_slot().load(std::memory_order_relaxed));
  const int nt = allow_threads ? pool().size() : 1;
  const double macs = static_cast<double>(m) * b.n * std::max(b.k, 1);
  if (nt == 1 || macs < parallel_min_macs) {
    run_range(a, lda, m, row_base, b, 0, b.nblocks, out, isa);
    return;
  }
  if (m >= nt * 16 || b.nblocks < nt) { // split rows (in multiples of 16)
    const int per = ((m + nt - 1) / nt + 15) / 16 * 16;
    pool().run([&](int t) {
      const int r0 = std::min(m, t * per), r1 = std::min(m, r0 + per);
      run_range(a + static_cast<std::size_t>(r0) * lda, lda, r1 - r0, row_base + r0, b, 0, b.nblocks, out, isa);
    });
  } else { // split column blocks
    const int per = (b.nblocks + nt - 1) / nt;
    pool().run([&](int t) {
      const int c0 = std::min(b.nblocks, t * per), c1 = std::min(b.nblocks, c0 + per);
      run_range(a, lda, m, row_base, b, c0, c1, out, isa);
    });
  }
}

// ---- Packing -------------------------------------------------------------------------------

struct packed_storage {
  packed_b desc;
  std::unique_ptr<std::int32_t[]> comp;
  std::int8_t* data = nullptr;
  ~packed_storage() { ::operator delete[](data, std::align_val_t{64}); }
};

std::shared_ptr<const packed_storage> pack(const std::int8_t* b, int n, int k) {
  auto s = std::make_shared<packed_storage>();
  packed_b& d = s->desc;
  d.n = std::max(n, 0);
  d.k = std::max(k, 0);
  d.kp = (d.k + 3) / 4 * 4;
  d.nblocks = (d.n + 15) / 16;
  const std::size_t bytes = static_cast<std::size_t>(d.nblocks) * 16 * d.kp;
  s->data = static_cast<std::int8_t*>(::operator new[](std::max<std::size_t>(bytes, 64), std::align_val_t{64}));
  std::memset(s->data, 0, std::max<std::size_t>(bytes, 64));
  s->comp.reset(new std::int32_t[static_cast<std::size_t>(d.nblocks) * 16 + 16]());
  for (int j = 0; j < d.n; ++j) {
    const std::int8_t* src = b + static_cast<std::size_t>(j) * d.k;
    std::int8_t* dst = s->data + static_cast<std::size_t>(j / 16) * 16 * d.kp + (j % 16) * 4;
    std::uint32_t colsum = 0;
    for (int p = 0; p < d.k; ++p) {
      dst[static_cast<std::size_t>(p / 4) * 64 + p % 4] = src[p];
      colsum += static_cast<std::uint32_t>(static_cast<std::int32_t>(src[p]));
    }
    s->comp[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(0u - colsum * 128u);
  }
  d.comp = s->comp.get();
  d.data = s->data;
  return s;
}

const packed_b& unpack(const packed_weights& w, int n, int k) {
  const auto* s = static_cast<const packed_storage*>(w.get());
  if (s == nullptr || s->desc.magic != packed_magic || s->desc.n != n || s->desc.k != k) {
    std::fprintf(stderr, "haca cpu backend: weights not packed by the cpu backend for n=%d k=%d\n", n, k);
    std::abort();
  }
  return s->desc;
}

out_desc make_epilogue(out_kind kind, std::int8_t* o, std::size_t ld, const std::int32_t* bias, requant_params rq) {
  out_desc out;
  out.kind = kind;
  out.o = o;
  out.ld = ld;
  out.bias = bias;
  out.multiplier = rq.multiplier;
  out.shift = std::clamp(rq.shift, 0, 31);
  out.relu = rq.relu;
  return out;
}

// ---- Ops -----------------------------------------------------------------------------------

std::string cpu_unavailable() { return ""; }

packed_weights cpu_pack_weights(const std::int8_t* b, int n, int k) { return pack(b, n, k); }

void cpu_gemm_s8s8s32(const std::int8_t* a, const std::int8_t* b, std::int32_t* c, int m, int n, int k) {
  if (m <= 0 || n <= 0) return;
  const auto p = pack(b, n, k);
  out_desc out;
  out.kind = out_kind::s32;
  out.c = c;
  out.ld = static_cast<std::size_t>(n);
  gemm(a, static_cast<std::size_t>(std::max(k, 0)), m, 0, p->desc, out, true);
}

void cpu_dense(const std::int8_t* a, int m, const packed_weights& w, int n, int k, const std::int32_t* bias,
               requant_params rq, std::int8_t* out) {
  if (m <= 0 || n <= 0) return;
  const packed_b& b = unpack(w, n, k);
  gemm(a, static_cast<std::size_t>(std::max(k, 0)), m, 0, b, make_epilogue(out_kind::i8, out, n, bias, rq), true);
}

// col[p][(c * kh + y) * kw + x] = in[c][oy * stride - pad + y][ox * stride - pad + x] (0 outside)
// Pixels whose window lies inside the image copy each kernel row with one 4-byte (KW <= 4) or
// 8-byte (KW <= 8) move when the source has that many bytes left in its row; the bytes past KW
// land on the next kernel row's (or pixel's) first bytes, which are written right after, and
// the last pixel's spill lands in the buffer's slack (im2col_slack bytes past the end).
constexpr std::size_t im2col_slack = 8;

template <int KW>
void im2col_rows(const std::int8_t* in, const conv2d_shape& s, std::int8_t* col) {
  constexpr int W = KW <= 4 ? 4 : 8;
  const int oh = s.out_h(), ow = s.out_w();
  const int kh = s.kernel_h, kw = KW > 0 ? KW : s.kernel_w;
  const std::size_t plane_size = static_cast<std::size_t>(s.in_h) * s.in_w;
  const std::size_t kdim = static_cast<std::size_t>(s.in_c) * kh * kw;
  std::int8_t* dst = col;
  for (int oy = 0; oy < oh; ++oy) {
    const int iy0 = oy * s.stride - s.pad;
    const bool rows_inside = iy0 >= 0 && iy0 + kh <= s.in_h;
    for (int ox = 0; ox < ow; ++ox, dst += kdim) {
      const int ix0 = ox * s.stride - s.pad;
      std::int8_t* d = dst;
      if (KW > 0 && rows_inside && ix0 >= 0 && ix0 + W <= s.in_w) {
        const std::int8_t* src = in + static_cast<std::size_t>(iy0) * s.in_w + ix0;
        for (int c = 0; c < s.in_c; ++c, src += plane_size) {
          const std::int8_t* r = src;
          for (int y = 0; y < kh; ++y, r += s.in_w, d += KW) std::memcpy(d, r, W);
        }
        continue;
      }
      const bool inside = rows_inside && ix0 >= 0 && ix0 + kw <= s.in_w;
      for (int c = 0; c < s.in_c; ++c) {
        const std::int8_t* plane = in + static_cast<std::size_t>(c) * plane_size;
        for (int y = 0; y < kh; ++y) {
          const int iy = iy0 + y;
          if (inside) {
            std::memcpy(d, plane + static_cast<std::size_t>(iy) * s.in_w + ix0, static_cast<std::size_t>(kw));
            d += kw;
            continue;
          }
          for (int x = 0; x < kw; ++x) {
            const int ix = ix0 + x;
            *d++ = (iy >= 0 && iy < s.in_h && ix >= 0 && ix < s.in_w) ? plane[static_cast<std::size_t>(iy) * s.in_w + ix]
                                                                      : std::int8_t{0};
          }
        }
      }
    }
  }
}

void im2col(const std::int8_t* in, const conv2d_shape& s, std::int8_t* col) {
  switch (s.kernel_w) {
  case 1: im2col_rows<1>(in, s, col); break;
  case 2: im2col_rows<2>(in, s, col); break;
  case 3: im2col_rows<3>(in, s, col); break;
  case 4: im2col_rows<4>(in, s, col); break;
  case 5: im2col_rows<5>(in, s, col); break;
  case 7: im2col_rows<7>(in, s, col); break;
  default: im2col_rows<0>(in, s, col); break;
  }
}

// The same convolution over the input padded with zeros on every side, without padding.
conv2d_shape padded_shape(conv2d_shape s) {
  s.in_h += 2 * s.pad;
  s.in_w += 2 * s.pad;
  s.pad = 0;
  return s;
}

void cpu_conv2d(const std::int8_t* in, int batch, const packed_weights& w, const std::int32_t* bias,
                const conv2d_shape& s, requant_params rq, std::int8_t* out) {
  const int oh = s.out_h(), ow = s.out_w();
  if (batch <= 0 || oh <= 0 || ow <= 0 || s.out_c <= 0) return;
  const int kdim = s.in_c * s.kernel_h * s.kernel_w;
  const packed_b& b = unpack(w, s.out_c, kdim);
  const int pixels = oh * ow;
  const std::size_t in_size = static_cast<std::size_t>(s.in_c) * s.in_h * s.in_w;
  const std::size_t out_size = static_cast<std::size_t>(s.out_c) * pixels;
  const std::size_t col_bytes = static_cast<std::size_t>(pixels) * kdim;
  auto image = [&](int i, bool threads) {
    thread_local std::vector<std::int8_t> col;
    if (col.size() < col_bytes + im2col_slack) col.resize(col_bytes + im2col_slack);
    if (s.pad > 0) { // im2col of the zero-padded image: every window inside, no bounds checks
      thread_local std::vector<std::int8_t> padded;
      const conv2d_shape sp = padded_shape(s);
      const std::size_t plane = static_cast<std::size_t>(sp.in_h) * sp.in_w;
      padded.assign(plane * s.in_c + im2col_slack, 0);
      const std::int8_t* src = in + i * in_size;
      for (int c = 0; c < s.in_c; ++c)
        for (int y = 0; y < s.in_h; ++y)
          std::memcpy(padded.data() + c * plane + static_cast<std::size_t>(y + s.pad) * sp.in_w + s.pad,
                      src + (static_cast<std::size_t>(c) * s.in_h + y) * s.in_w, static_cast<std::size_t>(s.in_w));
      im2col(padded.data(), sp, col.data());
    } else {
      im2col(in + i * in_size, s, col.data());
    }
    const out_desc o = make_epilogue(out_kind::i8_transposed, out + i * out_size, static_cast<std::size_t>(pixels),
                                     bias, rq);
    gemm(col.data(), static_cast<std::size_t>(kdim), pixels, 0, b, o, threads);
  };
  const int nt = pool().size();
  const double macs = static_cast<double>(batch) * pixels * s.out_c * kdim;
  if (batch >= nt && nt > 1 && macs >= parallel_min_macs) {
    const int per = (batch + nt - 1) / nt;
    pool().run([&](int t) {
      for (int i = t * per; i < std::min(batch, (t + 1) * per); ++i) image(i, false);
    });
  } else {
    for (int i = 0; i < batch; ++i) image(i, true);
  }
}

void cpu_maxpool(const std::int8_t* in, int batch, const maxpool_shape& s, std::int8_t* out) {
  const int oh = s.out_h(), ow = s.out_w();
  if (batch <= 0 || oh <= 0 || ow <= 0) return;
  const std::size_t planes = static_cast<std::size_t>(batch) * s.channels;
  const auto isa = static_cast<cpu_isa>(isa_slot().load(std::memory_order_relaxed));
  if (s.kernel == 2 && s.stride == 2 && isa != cpu_isa::scalar) {
    const auto row = isa == cpu_isa::avx512vnni ? &maxpool2_row_avx512 : &maxpool2_row_avx2;
    for (std::size_t pl = 0; pl < planes; ++pl)
      for (int oy = 0; oy < oh; ++oy) {
        const std::int8_t* r0 = in + (pl * s.in_h + 2 * static_cast<std::size_t>(oy)) * s.in_w;
        row(r0, r0 + s.in_w, ow, out + (pl * oh + oy) * ow);
      }
    return;
  }
  for (std::size_t pl = 0; pl < planes; ++pl) {
    const std::int8_t* src = in + pl * s.in_h * s.in_w;
    std::int8_t* dst = out + pl * oh * ow;
    for (int oy = 0; oy < oh; ++oy) {
      std::int8_t* d = dst + static_cast<std::size_t>(oy) * ow;
      const std::int8_t* r0 = src + static_cast<std::size_t>(oy) * s.stride * s.in_w;
      for (int ox = 0; ox < ow; ++ox) d[ox] = r0[ox * s.stride];
      for (int y = 0; y < s.kernel; ++y) {
        const std::int8_t* r = r0 + static_cast<std::size_t>(y) * s.in_w;
        for (int x = 0; x < s.kernel; ++x)
          for (int ox = 0; ox < ow; ++ox) d[ox] = std::max(d[ox], r[ox * s.stride + x]);
      }
    }
  }
}

} // namespace
} // namespace cpu_detail

cpu_isa cpu_detected_isa() { return cpu_detail::detect(); }
cpu_isa cpu_current_isa() { return static_cast<cpu_isa>(cpu_detail::isa_slot().load()); }
const char* cpu_isa_name(cpu_isa isa) {
  switch (isa) {
  case cpu_isa::scalar: return "scalar";
  case cpu_isa::avx2: return "avx2";
  case cpu_isa::avx512vnni: return "avx512vnni";
  }
  return "?";
}
const char* cpu_backend_isa() { return cpu_isa_name(cpu_current_isa()); }
bool cpu_force_isa(cpu_isa isa) {
  if (!cpu_detail::cpu_supports(isa)) return false;
  cpu_detail::isa_slot().store(static_cast<int>(isa));
  return true;
}
int cpu_threads() { return cpu_detail::pool().size(); }

void cpu_run_pair(const std::function<void(int)>& f) {
  if (cpu_threads() < 2) {
    f(0);
    f(1);
    return;
  }
  cpu_detail::pool().run([&](int t) {
    if (t < 2) f(t);
  });
}

void cpu_gemm_packed_s32(const std::int8_t* a, int m, const packed_weights& w, int n, int k, std::int32_t* c) {
  if (m <= 0 || n <= 0) return;
  const cpu_detail::packed_b& b = cpu_detail::unpack(w, n, k);
  cpu_detail::out_desc out;
  out.kind = cpu_detail::out_kind::s32;
  out.c = c;
  out.ld = static_cast<std::size_t>(n);
  cpu_detail::gemm(a, static_cast<std::size_t>(std::max(k, 0)), m, 0, b, out, true);
}

const backend& cpu_backend() {
  static const backend be{"cpu",
                          &cpu_detail::cpu_unavailable,
                          &cpu_detail::cpu_gemm_s8s8s32,
                          &cpu_detail::cpu_pack_weights,
                          &cpu_detail::cpu_dense,
                          &cpu_detail::cpu_conv2d,
                          &cpu_detail::cpu_maxpool};
  return be;
}

} // namespace haca::kernels
