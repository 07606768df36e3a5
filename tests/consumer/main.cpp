// One 3x3 convolution through the installed headers, checked against a direct computation.
// Returns 0 when every output matches.
#include <edgenn/edgenn.hpp>

#include <cmath>
#include <cstdio>

int main() {
  using namespace edgenn;
  constexpr int H = 5, W = 6, CIN = 3, COUT = 4;
  const auto p = kernels::Conv2dParams::square(3, 1, 1);  // 3x3, stride 1, "same" padding

  float x[H * W * CIN], w[COUT * 3 * 3 * CIN], b[COUT], y[H * W * COUT];
  for (int i = 0; i < H * W * CIN; ++i) x[i] = float((i * 7) % 11) / 11.0f - 0.5f;
  for (int i = 0; i < COUT * 9 * CIN; ++i) w[i] = float((i * 5) % 13) / 13.0f - 0.5f;
  for (int i = 0; i < COUT; ++i) b[i] = 0.25f * float(i);

  alignas(kAlignment) static float packed[4096];
  if (kernels::conv_packed_floats(p, CIN, COUT) > index_t(sizeof packed / sizeof packed[0])) return 2;
  const auto pw = kernels::pack_conv_weights(p, CIN, COUT, w, b, packed);
  alignas(kAlignment) static unsigned char mem[4096];
  if (kernels::conv2d_workspace_bytes(p, Shape{1, H, W, CIN}) > sizeof mem) return 2;
  Workspace ws(mem, sizeof mem);
  const Status st = kernels::conv2d(p, ConstTensor::dense(x, {1, H, W, CIN}), pw, Tensor::dense(y, {1, H, W, COUT}), ws);
  if (!st.is_ok()) {
    std::printf("conv2d failed: %s\n", st.message());
    return 1;
  }

  int bad = 0;
  for (int oy = 0; oy < H; ++oy)
    for (int ox = 0; ox < W; ++ox)
      for (int co = 0; co < COUT; ++co) {
        double acc = b[co];
        for (int ky = 0; ky < 3; ++ky)
          for (int kx = 0; kx < 3; ++kx) {
            const int iy = oy + ky - 1, ix = ox + kx - 1;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
            for (int ci = 0; ci < CIN; ++ci)
              acc += double(w[((co * 3 + ky) * 3 + kx) * CIN + ci]) * x[(iy * W + ix) * CIN + ci];
          }
        const float got = y[(oy * W + ox) * COUT + co];
        if (std::fabs(got - acc) > 1e-5 * (1.0 + std::fabs(acc))) ++bad;
      }
  std::printf("edgenn %s, %s backend: conv2d 1x%dx%dx%d -> %d channels, %d mismatches\n", version(),
              simd::default_arch::name(), H, W, CIN, COUT, bad);
  return bad == 0 ? 0 : 1;
}
