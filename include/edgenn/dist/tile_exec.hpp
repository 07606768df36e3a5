// Per-tile execution of a tiled training step (forward, boundary hand-over, backward), with no
// transport: synchronisation points are split into pack (what this tile sends to each peer) and
// run (unpack what it received, then compute until the next synchronisation point). The
// in-process simulator (simulate.hpp) and the MPI runtime (mpi_runtime.hpp) drive the same code.
//
// Kernels run on tiles in global coordinates: forward layers read the clamped input region
// with paddings clipped to what lies outside the map (so zero padding, and max-pool's
// "ignore the padding", are exactly the single-device ones); backward kernels take a TileOrigin.
// The model side: weights in OHWI per layer, packed once per step (model.hpp).
#pragma once

#include <cstring>
#include <vector>

#include "edgenn/dist/model.hpp"
#include "edgenn/dist/plan.hpp"
#include "edgenn/kernels/conv2d_backward.hpp"
#include "edgenn/kernels/depthwise_backward.hpp"
#include "edgenn/kernels/elementwise_backward.hpp"
#include "edgenn/kernels/pooling_backward.hpp"

namespace edgenn::dist {

// A batch of a map on a rectangle of global coordinates, dense NHWC.
struct RegionBuf {
  Rect rect;
  int n = 0, c = 0;
  std::vector<float> data;

  void reset(const Rect& r, int batch, int channels) {
    rect = r;
    n = batch;
    c = channels;
    data.assign(std::size_t(batch) * r.area() * channels, 0.0f);
  }
  Tensor view() { return Tensor::dense(data.data(), Shape{n, rect.h(), rect.w(), c}); }
  ConstTensor view() const { return ConstTensor::dense(data.data(), Shape{n, rect.h(), rect.w(), c}); }
  Tensor sub(const Rect& r) { return view().region(r.r.lo - rect.r.lo, r.c.lo - rect.c.lo, r.h(), r.w()); }
  ConstTensor sub(const Rect& r) const {
    return view().region(r.r.lo - rect.r.lo, r.c.lo - rect.c.lo, r.h(), r.w());
  }
  std::size_t bytes() const { return data.size() * sizeof(float); }
};

inline void copy_view(ConstTensor src, Tensor dst) {
  for (int b = 0; b < src.n(); ++b)
    for (int y = 0; y < src.h(); ++y)
      for (int x = 0; x < src.w(); ++x) std::memcpy(dst.pixel(b, y, x), src.pixel(b, y, x), sizeof(float) * src.c());
}
// Append a view to a flat buffer (NHWC order) / read it back.
inline void append_view(ConstTensor src, std::vector<float>& out) {
  for (int b = 0; b < src.n(); ++b)
    for (int y = 0; y < src.h(); ++y)
      for (int x = 0; x < src.w(); ++x) out.insert(out.end(), src.pixel(b, y, x), src.pixel(b, y, x) + src.c());
}
inline const float* read_view(const float* src, Tensor dst) {
  for (int b = 0; b < dst.n(); ++b)
    for (int y = 0; y < dst.h(); ++y)
      for (int x = 0; x < dst.w(); ++x) {
        std::memcpy(dst.pixel(b, y, x), src, sizeof(float) * dst.c());
        src += dst.c();
      }
  return src;
}

// Paddings of a layer run on `in` (clamped input region) producing `out`: what the window
// arithmetic reaches outside the input region.
struct ClipPads {
  int t, l, b, r;
};
inline ClipPads clip_pads(const LayerDesc& ly, const Rect& out, const Rect& in) {
  const Rect need = ly.need(out);
  return ClipPads{in.r.lo - need.r.lo, in.c.lo - need.c.lo, need.r.hi - in.r.hi, need.c.hi - in.c.hi};
}

// Messages to / from each peer of one synchronisation point: flat float payloads.
using PeerBuffers = std::vector<std::vector<float>>;

class TileRunner {
 public:
  TileRunner(const Plan& plan, int tile) : plan_(&plan), t_(tile) {}

  int tile() const { return t_; }
  const TilePlan& tp() const { return plan_->tiles[t_]; }

  // Start a step on `input` (map 0, the whole batch; every tile reads its own region).
  void begin(ConstTensor input, const PackedModel& model) {
    input_ = input;
    model_ = &model;
    n_ = input.n();
    const int L = plan_->depth();
    y_.assign(L, RegionBuf{});
    xin_.assign(L, RegionBuf{});
    bwd_act_.clear();
    grads_.resize_like(plan_->stack);
    grads_.zero();
    peak_bytes_ = 0;
  }

  // ---- forward ----
  void pack_forward(int g, PeerBuffers& out) const { pack(tp().fwd_sync[g], out); }

  Status run_forward(int g, const PeerBuffers& in) {
    const Sync& s = tp().fwd_sync[g];
    const int a = plan_->fwd_groups[g], b = group_end(plan_->fwd_groups, g, plan_->depth());
    if (a > 0) {
      std::vector<RegionBuf> got;
      EDGENN_TRY(unpack(s, in, got));
      xin_[a] = std::move(got[0]);
      // The assembled input usually covers the previous group's output: keep one copy.
      if (xin_[a].rect.contains(y_[a - 1].rect)) y_[a - 1] = RegionBuf{};
    }
    for (int l = a; l <= b; ++l) EDGENN_TRY(forward_layer(l));
    track_memory();
    return Status::ok();
  }

  // The core of the stack's output (after the last forward group).
  ConstTensor output_core() const { return y_.back().sub(tp().core[plan_->depth()]); }

  // ---- boundary: the gradient of the loss w.r.t. the stack output, on the core ----
  void set_output_grad(ConstTensor delta_core) {
    delta_.reset(tp().core[plan_->depth()], n_, plan_->stack.map_c(plan_->depth()));
    copy_view(delta_core, delta_.view());
  }

  // ---- backward ----
  // Forms this tile's part of the group's entry gradient (g = delta * act'(y) on the core).
  Status pack_backward(int g, PeerBuffers& out) {
    const int b = group_end(plan_->bwd_groups, g, plan_->depth());
    const LayerDesc& ly = plan_->stack.layers[b];
    gcore_.reset(tp().core[b + 1], n_, ly.cout);
    ConstTensor y;
    EDGENN_TRY(find_act(b + 1, gcore_.rect, y));
    EDGENN_TRY(kernels::activation_backward(y, delta_.view(), gcore_.view(), ly.act));
    delta_ = RegionBuf{};
    pack(tp().bwd_sync[g], out);
    return Status::ok();
  }

  Status run_backward(int g, const PeerBuffers& in) {
    const Sync& s = tp().bwd_sync[g];
    const int a = plan_->bwd_groups[g], b = group_end(plan_->bwd_groups, g, plan_->depth());
    std::vector<RegionBuf> got;
    EDGENN_TRY(unpack(s, in, got));
    gcore_ = RegionBuf{};  // unpacked into the entry gradient
    RegionBuf cur = std::move(got[0]);
    bwd_act_.clear();
    for (std::size_t i = 1; i < got.size(); ++i) bwd_act_.push_back({s.needs[i].map, std::move(got[i])});
    track_memory(cur.bytes());
    for (int l = b; l >= a; --l) {
      RegionBuf dx;
      EDGENN_TRY(backward_layer(l, cur, dx));
      if (l == a) {
        delta_ = std::move(dx);
        break;
      }
      // Into the layer below: apply its activation derivative on the region.
      const LayerDesc& below = plan_->stack.layers[l - 1];
      if (below.act != Activation::none) {
        ConstTensor yv;
        EDGENN_TRY(find_act(l, dx.rect, yv));
        EDGENN_TRY(kernels::activation_backward(yv, dx.view(), dx.view(), below.act));
      }
      cur = std::move(dx);
    }
    bwd_act_.clear();
    // Forward state of the layers done is not read again (map a stays: the next group's top).
    for (int l = a; l < plan_->depth(); ++l) {
      y_[l] = RegionBuf{};
      if (l > a) xin_[l] = RegionBuf{};
    }
    return Status::ok();
  }

  // Layer 0's input gradient on the core of map 0 (plan.input_grad) after the last backward group.
  ConstTensor input_grad_core() const { return delta_.view(); }
  const ModelGrads& grads() const { return grads_; }
  // Largest number of bytes held in activation / halo buffers at a synchronisation point.
  std::size_t peak_bytes() const { return peak_bytes_; }

 private:
  struct MapBuf {
    int map;
    RegionBuf buf;
  };

  const Plan* plan_;
  int t_;
  const PackedModel* model_ = nullptr;
  ConstTensor input_;
  int n_ = 0;
  std::vector<RegionBuf> y_;    // [layer] y_l on fwd_out[l]
  std::vector<RegionBuf> xin_;  // [layer] assembled x_l of forward-group starts (fwd_in)
  std::vector<MapBuf> bwd_act_;
  RegionBuf delta_;  // gradient w.r.t. the output of the current backward group's top, on its core
  RegionBuf gcore_;  // g of the current backward group's top on the core (what peers receive)
  ModelGrads grads_;
  std::vector<unsigned char> ws_mem_;
  std::size_t peak_bytes_ = 0;

  void track_memory(std::size_t extra = 0) {
    // The input region this tile reads (a device keeps only that part of the batch).
    std::size_t b = delta_.bytes() + gcore_.bytes() +
                    std::size_t(n_) * tp().fwd_in[0].area() * plan_->stack.map_c(0) * sizeof(float);
    for (const RegionBuf& r : y_) b += r.bytes();
    for (const RegionBuf& r : xin_) b += r.bytes();
    for (const MapBuf& m : bwd_act_) b += m.buf.bytes();
    b += extra;
    if (b > peak_bytes_) peak_bytes_ = b;
  }

  Workspace workspace(std::size_t bytes) {
    if (ws_mem_.size() < bytes + kAlignment) ws_mem_.resize(bytes + kAlignment);
    return Workspace(ws_mem_.data(), ws_mem_.size());
  }

  // Map m (forward values) on r, from whatever this tile holds.
  Status find_act(int m, const Rect& r, ConstTensor& out) const {
    if (m == 0) {
      out = input_.region(r.r.lo, r.c.lo, r.h(), r.w());
      return Status::ok();
    }
    if (m <= int(y_.size()) && !y_[m - 1].data.empty() && y_[m - 1].rect.contains(r)) {
      out = y_[m - 1].sub(r);
      return Status::ok();
    }
    if (m < int(xin_.size()) && !xin_[m].data.empty() && xin_[m].rect.contains(r)) {
      out = xin_[m].sub(r);
      return Status::ok();
    }
    for (const MapBuf& mb : bwd_act_)
      if (mb.map == m && mb.buf.rect.contains(r)) {
        out = mb.buf.sub(r);
        return Status::ok();
      }
    return Status(Error::invalid_argument, "dist: a tile needs forward values it neither holds nor received");
  }

  void pack(const Sync& s, PeerBuffers& out) const {
    out.assign(plan_->tile_count(), {});
    for (int q = 0; q < plan_->tile_count(); ++q)
      for (const Piece& p : s.send[q]) {
        if (p.kind == Kind::gradient) {
          append_view(gcore_.sub(p.rect), out[q]);
        } else {
          ConstTensor v;
          (void)find_act(p.map, p.rect, v);  // planner guarantees the sender owns it
          append_view(v, out[q]);
        }
      }
  }

  Status unpack(const Sync& s, const PeerBuffers& in, std::vector<RegionBuf>& got) const {
    std::vector<const float*> cursor(plan_->tile_count(), nullptr);
    std::vector<const float*> end(plan_->tile_count(), nullptr);
    for (int q = 0; q < plan_->tile_count(); ++q) {
      if (q < int(in.size()) && !in[q].empty()) {
        cursor[q] = in[q].data();
        end[q] = in[q].data() + in[q].size();
      }
      EDGENN_CHECK(std::size_t(s.recv_values[q]) * n_ == (q < int(in.size()) ? in[q].size() : 0),
                   Error::corrupt_data, "dist: a peer's halo message has the wrong size");
    }
    got.resize(s.needs.size());
    for (std::size_t i = 0; i < s.needs.size(); ++i) {
      const Need& nd = s.needs[i];
      got[i].reset(nd.rect, n_, plan_->stack.map_c(nd.map));
      for (const Piece& p : nd.parts) {
        Tensor dst = got[i].sub(p.rect);
        if (p.src != t_) {
          cursor[p.src] = read_view(cursor[p.src], dst);
        } else if (p.kind == Kind::gradient) {
          copy_view(gcore_.sub(p.rect), dst);
        } else {
          ConstTensor v;
          EDGENN_TRY(find_act(p.map, p.rect, v));
          copy_view(v, dst);
        }
      }
    }
    return Status::ok();
  }

  Status forward_layer(int l) {
    const LayerDesc& ly = plan_->stack.layers[l];
    const Rect out = tp().fwd_out[l], in = tp().fwd_in[l];
    ConstTensor x;
    EDGENN_TRY(find_act(l, in, x));
    y_[l].reset(out, n_, ly.cout);
    const ClipPads cp = clip_pads(ly, out, in);
    const LayerWeights& w = model_->layer(l);
    if (ly.kind == LayerKind::maxpool) return kernels::max_pool2d(ly.pool_params(cp.t, cp.l, cp.b, cp.r), x, y_[l].view());
    const kernels::Conv2dParams p = ly.conv_params(cp.t, cp.l, cp.b, cp.r);
    Workspace ws = workspace(kernels::conv2d_workspace_bytes(p, x.shape) + 4096);
    if (ly.kind == LayerKind::depthwise) return kernels::depthwise_conv2d(p, x, w.dw_packed, y_[l].view(), ws);
    return kernels::conv2d(p, x, w.packed, y_[l].view(), ws);
  }

  // g: pre-activation gradient of layer l's output on tp().bwd_g[l]; dx: on tp().bwd_dx[l].
  Status backward_layer(int l, const RegionBuf& g, RegionBuf& dx) {
    const LayerDesc& ly = plan_->stack.layers[l];
    const Stack& st = plan_->stack;
    const Rect dxr = tp().bwd_dx[l];
    const LayerWeights& w = model_->layer(l);
    if (ly.kind == LayerKind::maxpool) {
      dx.reset(dxr, n_, ly.cin);
      if (dxr.empty()) return Status::ok();
      const Rect xr = intersect(ly.need(g.rect), st.map_rect(l));
      ConstTensor x;
      EDGENN_TRY(find_act(l, xr, x));
      const ClipPads cp = clip_pads(ly, g.rect, xr);
      RegionBuf full;
      full.reset(xr, n_, ly.cin);
      Workspace ws = workspace(kernels::max_pool2d_backward_workspace_bytes(ly.cin) + 4096);
      EDGENN_TRY(kernels::max_pool2d_backward(ly.pool_params(cp.t, cp.l, cp.b, cp.r), x, g.view(), full.view(), ws));
      const Rect both = intersect(xr, dxr);
      if (!both.empty()) copy_view(full.sub(both), dx.sub(both));
      return Status::ok();
    }
    const kernels::Conv2dParams p = ly.conv_params();
    // Weight and bias gradients over the owned output core.
    const Rect core = tp().core[l + 1];
    const Rect xr = intersect(ly.need(core), st.map_rect(l));
    ConstTensor x;
    EDGENN_TRY(find_act(l, xr, x));
    kernels::TileOrigin wo{xr.r.lo, xr.c.lo, core.r.lo, core.c.lo};
    LayerGrads& gr = grads_.layers[l];
    if (ly.kind == LayerKind::depthwise) {
      Workspace ws = workspace(kernels::depthwise_backward_weights_workspace_bytes(p, ly.cin) + 4096);
      EDGENN_TRY(kernels::depthwise_backward_weights(p, x, g.sub(core), gr.w.data(), gr.b.data(), ws, true, &wo));
    } else {
      Workspace ws = workspace(kernels::conv2d_backward_weights_workspace_bytes(p, ly.cin, ly.cout) + 4096);
      EDGENN_TRY(kernels::conv2d_backward_weights(p, x, g.sub(core), gr.w.data(), gr.b.data(), ws, true, &wo));
    }
    dx.reset(dxr, n_, ly.cin);
    if (dxr.empty()) return Status::ok();
    kernels::TileOrigin io{dxr.r.lo, dxr.c.lo, g.rect.r.lo, g.rect.c.lo};
    if (ly.kind == LayerKind::depthwise) {
      Workspace ws = workspace(4096);
      return kernels::depthwise_backward_input(p, g.view(), w.dw_packed, dx.view(), ws, false, {}, &io);
    }
    Workspace ws = workspace(kernels::conv2d_backward_input_workspace_bytes(p, ly.cout) + 4096);
    return kernels::conv2d_backward_input(p, g.view(), w.dx_packed, dx.view(), ws, false, {}, &io);
  }
};

}  // namespace edgenn::dist
