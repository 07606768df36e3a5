// Run every path of MEANet (main, extension, and the cloud model when given) over a data
// set and collect one Observation per input: the input to calibration and to the trade-off
// curve of the demo report. Host side; batched.
#pragma once

#include <vector>

#include "edgenn/io/idx.hpp"
#include "edgenn/io/model_file.hpp"
#include "edgenn/meanet/calibration.hpp"
#include "edgenn/runtime/batch_inference.hpp"

namespace edgenn::meanet {

template <class Arch>
io::Result<std::vector<Observation>> observe(const nn::MEANet<Arch>& m, const io::InputSpec& in, const RouterConfig& cfg,
                                             const io::ImageSet& data, const nn::Classifier<Arch>* cloud,
                                             const io::InputSpec* cloud_in, int threads = 1, int batch = 128) {
  const int n = data.count, C = m.num_classes(), H = m.num_hard();
  std::vector<float> main_logits(std::size_t(n) * C), ext_logits(std::size_t(n) * H), cloud_logits;
  const Shape bs = in.shape(batch), cs = m.concat_shape(bs);
  std::vector<float> x(std::size_t(bs.size())), cat(std::size_t(cs.size()));
  std::vector<unsigned char> mem(m.workspace_bytes(bs) + kAlignment);
  for (int b0 = 0; b0 < n; b0 += batch) {
    const int nb = std::min(batch, n - b0);
    const Shape s = in.shape(nb), c = m.concat_shape(s);
    Workspace ws(mem.data(), mem.size());
    Status st = nn::normalize_pixels(data.image(b0), in.mean.data(), in.std.data(), Tensor::dense(x.data(), s));
    if (st) st = m.run_main(ConstTensor::dense(x.data(), s), Tensor::dense(cat.data(), c), &main_logits[std::size_t(b0) * C], C, ws);
    if (st) st = m.run_extension(ConstTensor::dense(x.data(), s), Tensor::dense(cat.data(), c), &ext_logits[std::size_t(b0) * H], H, ws);
    if (!st) return io::fail(st.code(), std::string("MEANet forward failed: ") + st.message());
  }
  if (cloud) {
    cloud_logits.resize(std::size_t(n) * cloud->num_classes());
    runtime::BatchClassifier<Arch> runner(*cloud, *cloud_in, threads, 64);
    if (Status st = runner.run(data.pixels.data(), n, cloud_logits.data()); !st)
      return io::fail(st.code(), std::string("cloud model forward failed: ") + st.message());
  }
  std::vector<Observation> obs(static_cast<std::size_t>(n));
  std::vector<float> probs(std::size_t(std::max(C, H)));
  for (int i = 0; i < n; ++i) {
    Observation& o = obs[std::size_t(i)];
    o.label = data.labels.empty() ? -1 : data.labels[std::size_t(i)];
    o.main = softmax_signals(&main_logits[std::size_t(i) * C], C, probs.data(), m.hard_index.data());
    o.hard = is_hard(cfg, o.main, m.hard_index.data(), H, C);
    o.ext = softmax_signals(&ext_logits[std::size_t(i) * H], H, probs.data());
    o.ext_class = m.hard_classes[std::size_t(o.ext.top)];
    if (cloud) {
      const int cc = cloud->num_classes();
      const float* row = &cloud_logits[std::size_t(i) * cc];
      o.cloud_class = int(std::max_element(row, row + cc) - row);
    }
  }
  return obs;
}

}  // namespace edgenn::meanet
