// Tile planner for tiled distributed training (docs/tiled_training.md, specs/tiled_training.md §3.3, §10.1).
//
// Pure arithmetic, no MPI and no kernels: from a stack of conv / depthwise / max-pool layers,
// an N x M grid over the last layer's output and forward / backward groupings, it derives per
// tile
//   - the owned core of every map (map m = input of layer m, map L = the stack's output);
//     cores tile every map without overlap and are stride-aligned (boundary b at map m+1 maps
//     to b * stride at map m),
//   - the regions computed in the forward pass (group end = core, traced back through the
//     group with the exact window arithmetic, clamped to the map),
//   - the regions the backward pass needs (gradient g of a layer's output, input gradient dx),
//   - and, per synchronisation point, the exact pieces of data each tile needs from each peer:
//     rectangles = needed region ∩ peer core, any number of peers, corners included.
// Backward exactness: a backward group is entered with the pre-activation gradient g of its top
// layer (computed by the owner of each core) plus, for every inner layer, the forward state its
// backward reads on the halo: the layer's output y (activation derivative) and a max-pool's
// input (argmax). Pieces the tile already holds from its forward pass are not sent.
//
// Linux-side planning code: uses std::vector (allocates), returns errors as Status.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "edgenn/core/status.hpp"
#include "edgenn/kernels/activation.hpp"
#include "edgenn/kernels/conv2d.hpp"
#include "edgenn/kernels/pooling.hpp"

namespace edgenn::dist {

// Inclusive interval of global coordinates; empty when hi < lo.
struct Interval {
  int lo = 0, hi = -1;
  constexpr bool empty() const { return hi < lo; }
  constexpr int size() const { return empty() ? 0 : hi - lo + 1; }
  constexpr bool contains(Interval o) const { return o.empty() || (lo <= o.lo && o.hi <= hi); }
  friend constexpr bool operator==(Interval a, Interval b) {
    return (a.empty() && b.empty()) || (a.lo == b.lo && a.hi == b.hi);
  }
};
constexpr Interval intersect(Interval a, Interval b) {
  return Interval{std::max(a.lo, b.lo), std::min(a.hi, b.hi)};
}
constexpr Interval hull(Interval a, Interval b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return Interval{std::min(a.lo, b.lo), std::max(a.hi, b.hi)};
}

// Rows r x columns c.
struct Rect {
  Interval r, c;
  constexpr bool empty() const { return r.empty() || c.empty(); }
  constexpr long area() const { return long(r.size()) * c.size(); }
  constexpr int h() const { return r.size(); }
  constexpr int w() const { return c.size(); }
  constexpr bool contains(const Rect& o) const { return o.empty() || (r.contains(o.r) && c.contains(o.c)); }
  friend constexpr bool operator==(const Rect& a, const Rect& b) {
    return (a.empty() && b.empty()) || (a.r == b.r && a.c == b.c);
  }
};
constexpr Rect intersect(const Rect& a, const Rect& b) { return Rect{intersect(a.r, b.r), intersect(a.c, b.c)}; }
constexpr Rect hull(const Rect& a, const Rect& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return Rect{hull(a.r, b.r), hull(a.c, b.c)};
}

enum class LayerKind : std::uint8_t { conv, depthwise, maxpool };

// One fused layer: y = act(op(x)). Weights in OHWI ([cout][kh][kw][cin/groups]).
struct LayerDesc {
  LayerKind kind = LayerKind::conv;
  int kh = 3, kw = 3, sh = 1, sw = 1, dh = 1, dw = 1;
  int pt = 0, pl = 0, pb = 0, pr = 0;
  int cin = 1, cout = 1;
  Activation act = Activation::none;
  // Batch norm between the op and the activation. Training BN exactly needs cross-tile
  // statistics at every BN layer; the planner rejects it (fold frozen BN into the conv).
  bool batchnorm = false;

  static LayerDesc conv(int cin, int cout, int k, int s = 1, int p = -1, Activation act = Activation::relu,
                        int d = 1) {
    LayerDesc l;
    l.kind = LayerKind::conv;
    l.kh = l.kw = k;
    l.sh = l.sw = s;
    l.dh = l.dw = d;
    l.pt = l.pl = l.pb = l.pr = p < 0 ? d * (k - 1) / 2 : p;
    l.cin = cin;
    l.cout = cout;
    l.act = act;
    return l;
  }
  static LayerDesc depthwise(int c, int k, int s = 1, int p = -1, Activation act = Activation::relu) {
    LayerDesc l = conv(c, c, k, s, p, act);
    l.kind = LayerKind::depthwise;
    return l;
  }
  static LayerDesc maxpool(int c, int k = 2, int s = 2, int p = 0) {
    LayerDesc l;
    l.kind = LayerKind::maxpool;
    l.kh = l.kw = k;
    l.sh = l.sw = s;
    l.pt = l.pl = l.pb = l.pr = p;
    l.cin = l.cout = c;
    l.act = Activation::none;
    return l;
  }

  constexpr bool has_weights() const { return kind != LayerKind::maxpool; }
  constexpr int groups() const { return kind == LayerKind::depthwise ? cin : 1; }
  constexpr long weight_count() const {
    return has_weights() ? long(cout) * kh * kw * (cin / groups()) : 0;
  }
  constexpr int out_h(int h) const { return window_output_size(h, kh, sh, dh, pt, pb); }
  constexpr int out_w(int w) const { return window_output_size(w, kw, sw, dw, pl, pr); }

  // Params with explicit (possibly tile-clipped) paddings.
  kernels::Conv2dParams conv_params(int t, int l, int b, int r) const {
    kernels::Conv2dParams p;
    p.kernel_h = kh;
    p.kernel_w = kw;
    p.stride_h = sh;
    p.stride_w = sw;
    p.dilation_h = dh;
    p.dilation_w = dw;
    p.pad_top = t;
    p.pad_left = l;
    p.pad_bottom = b;
    p.pad_right = r;
    p.groups = groups();
    p.activation = act;
    return p;
  }
  kernels::Conv2dParams conv_params() const { return conv_params(pt, pl, pb, pr); }
  kernels::Pool2dParams pool_params(int t, int l, int b, int r) const {
    kernels::Pool2dParams p;
    p.kernel_h = kh;
    p.kernel_w = kw;
    p.stride_h = sh;
    p.stride_w = sw;
    p.pad_top = t;
    p.pad_left = l;
    p.pad_bottom = b;
    p.pad_right = r;
    return p;
  }
  kernels::Pool2dParams pool_params() const { return pool_params(pt, pl, pb, pr); }

  // Input interval read by outputs [o.lo, o.hi] (unclamped; outside the map is padding).
  constexpr Interval need_rows(Interval o) const { return need(o, sh, pt, dh * (kh - 1)); }
  constexpr Interval need_cols(Interval o) const { return need(o, sw, pl, dw * (kw - 1)); }
  constexpr Rect need(const Rect& o) const { return Rect{need_rows(o.r), need_cols(o.c)}; }
  // Outputs (clamped to [0, out-1]) whose windows touch inputs [i.lo, i.hi].
  constexpr Rect touched_by(const Rect& i, int out_h_, int out_w_) const {
    return Rect{touched(i.r, sh, pt, dh * (kh - 1), out_h_), touched(i.c, sw, pl, dw * (kw - 1), out_w_)};
  }

 private:
  static constexpr Interval need(Interval o, int s, int p, int span) {
    if (o.empty()) return o;
    return Interval{o.lo * s - p, o.hi * s - p + span};
  }
  static constexpr int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
  static constexpr int ceil_div(int a, int b) { return -floor_div(-a, b); }
  static constexpr Interval touched(Interval i, int s, int p, int span, int out) {
    if (i.empty()) return i;
    return intersect(Interval{ceil_div(i.lo + p - span, s), floor_div(i.hi + p, s)}, Interval{0, out - 1});
  }
};

// The fused stack and its input size. Map m has size h[m] x w[m] x c[m]; map 0 is the input.
struct Stack {
  int in_h = 0, in_w = 0, in_c = 0;
  std::vector<LayerDesc> layers;

  int depth() const { return int(layers.size()); }
  int map_h(int m) const {
    int h = in_h;
    for (int l = 0; l < m; ++l) h = layers[l].out_h(h);
    return h;
  }
  int map_w(int m) const {
    int w = in_w;
    for (int l = 0; l < m; ++l) w = layers[l].out_w(w);
    return w;
  }
  int map_c(int m) const { return m == 0 ? in_c : layers[m - 1].cout; }
  Rect map_rect(int m) const { return Rect{Interval{0, map_h(m) - 1}, Interval{0, map_w(m) - 1}}; }

  Status validate() const {
    EDGENN_CHECK(in_h > 0 && in_w > 0 && in_c > 0, Error::invalid_argument, "dist: empty stack input");
    EDGENN_CHECK(!layers.empty(), Error::invalid_argument, "dist: the fused stack has no layers");
    int h = in_h, w = in_w, c = in_c;
    for (const LayerDesc& l : layers) {
      EDGENN_CHECK(!l.batchnorm, Error::unsupported,
                   "dist: batch norm inside the fused stack needs cross-tile statistics, which this runtime does "
                   "not implement; fold frozen BN into the conv or end the fused stack before the BN layer");
      EDGENN_CHECK(l.cin == c, Error::shape_mismatch, "dist: a layer's input channels differ from the previous output");
      EDGENN_CHECK(l.kh > 0 && l.kw > 0 && l.sh > 0 && l.sw > 0 && l.dh > 0 && l.dw > 0, Error::invalid_argument,
                   "dist: kernel, stride and dilation must be positive");
      EDGENN_CHECK(l.pt >= 0 && l.pl >= 0 && l.pb >= 0 && l.pr >= 0, Error::invalid_argument,
                   "dist: padding must be non-negative");
      if (l.kind == LayerKind::maxpool) {
        EDGENN_CHECK(l.cout == l.cin && l.dh == 1 && l.dw == 1, Error::invalid_argument,
                     "dist: max pool keeps channels and has no dilation");
        EDGENN_CHECK(l.pt < l.kh && l.pb < l.kh && l.pl < l.kw && l.pr < l.kw, Error::invalid_argument,
                     "dist: max-pool padding must be smaller than the kernel");
      }
      if (l.kind == LayerKind::depthwise)
        EDGENN_CHECK(l.cout == l.cin, Error::invalid_argument, "dist: depthwise keeps channels");
      h = l.out_h(h);
      w = l.out_w(w);
      c = l.cout;
      EDGENN_CHECK(h > 0 && w > 0, Error::shape_mismatch, "dist: a layer's window is larger than its padded input");
    }
    return Status::ok();
  }
};

// A grouping: the first layer of every group, ascending, starting with 0.
using Grouping = std::vector<int>;
inline Grouping fully_fused(int) { return Grouping{0}; }
inline Grouping layer_wise(int depth) {
  Grouping g;
  for (int l = 0; l < depth; ++l) g.push_back(l);
  return g;
}
inline int group_end(const Grouping& g, int i, int depth) { return i + 1 < int(g.size()) ? g[i + 1] - 1 : depth - 1; }

// What a message carries.
enum class Kind : std::uint8_t {
  activation,  // values of map `map` (forward input of a group, or forward state for backward)
  gradient,    // pre-activation gradient g of layer map-1's output (backward group entry)
};

// A rectangle of map `map` that tile `dst` receives from tile `src` (src owns it: rect ⊆ core).
struct Piece {
  int src = 0;
  Kind kind = Kind::activation;
  int map = 0;
  Rect rect;
};

// A region a tile assembles at a synchronisation point, and where each part comes from.
struct Need {
  Kind kind = Kind::activation;
  int map = 0;
  Rect rect;                 // clamped to the map
  std::vector<Piece> parts;  // src == self: copied locally (own core or forward state it holds)
};

struct Sync {
  std::vector<Need> needs;
  // Pieces sent to each peer, in the order the peer unpacks them.
  std::vector<std::vector<Piece>> send;  // [peer] -> pieces (src == this tile)
  std::vector<long> recv_values;         // [peer] values per batch item (floats / n)
};

struct TilePlan {
  int row = 0, col = 0;
  std::vector<Rect> core;     // [map 0..L]
  std::vector<Rect> fwd_out;  // [layer] region of y_l computed (⊇ core[l+1])
  std::vector<Rect> fwd_in;   // [layer] region of x_l read = need(fwd_out) ∩ map
  std::vector<Rect> bwd_g;    // [layer] region of g_l (pre-activation output gradient) used
  std::vector<Rect> bwd_dx;   // [layer] region of dx_l produced (map l)
  std::vector<Sync> fwd_sync;  // [forward group]
  std::vector<Sync> bwd_sync;  // [backward group]
};

struct Plan {
  Stack stack;
  int grid_rows = 1, grid_cols = 1;
  Grouping fwd_groups, bwd_groups;
  bool input_grad = false;  // produce dx of map 0 on every core (layer 0's input gradient)
  std::vector<TilePlan> tiles;

  int tile_count() const { return int(tiles.size()); }
  int depth() const { return stack.depth(); }
  // True if `tile` holds map m on `r` after its forward pass (map 0, the input, is everywhere).
  bool holds_forward(int tile, int m, const Rect& r) const {
    if (m == 0) return true;
    const TilePlan& t = tiles[tile];
    if (t.fwd_out[m - 1].contains(r)) return true;
    return m < depth() && is_group_start(fwd_groups, m) && t.fwd_in[m].contains(r);
  }
  static bool is_group_start(const Grouping& g, int l) { return std::find(g.begin(), g.end(), l) != g.end(); }
};

// Split [0, extent) into `parts` near-equal intervals (sizes differ by at most one).
inline std::vector<int> split_bounds(int extent, int parts) {
  std::vector<int> b(parts + 1);
  for (int i = 0; i <= parts; ++i) b[i] = int((long(extent) * i) / parts);
  return b;
}

inline Status validate_grouping(const Grouping& g, int depth, const char* what) {
  (void)what;
  EDGENN_CHECK(!g.empty() && g[0] == 0, Error::invalid_argument, "dist: a grouping must start at layer 0");
  for (std::size_t i = 1; i < g.size(); ++i)
    EDGENN_CHECK(g[i] > g[i - 1] && g[i] < depth, Error::invalid_argument,
                 "dist: group starts must be ascending layer indices inside the stack");
  return Status::ok();
}

namespace detail {

// Pieces of `need` (map m) by owner; parts the tile holds itself are marked src = self.
inline Need make_need(const Plan& plan, int self, Kind kind, int m, const Rect& rect, bool local_ok) {
  Need n;
  n.kind = kind;
  n.map = m;
  n.rect = rect;
  if (rect.empty()) return n;
  for (int q = 0; q < plan.tile_count(); ++q) {
    const Rect part = intersect(rect, plan.tiles[q].core[m]);
    if (part.empty()) continue;
    Piece p;
    p.kind = kind;
    p.map = m;
    p.rect = part;
    // Map 0 is the input every tile reads itself; forward state held locally is not sent.
    const bool local = q == self || (kind == Kind::activation && local_ok && plan.holds_forward(self, m, part));
    p.src = local ? self : q;
    n.parts.push_back(p);
  }
  return n;
}

inline void fill_sends(Plan& plan, std::vector<Sync> TilePlan::*which) {
  const int T = plan.tile_count();
  for (int t = 0; t < T; ++t)
    for (Sync& s : plan.tiles[t].*which) {
      s.send.assign(T, {});
      s.recv_values.assign(T, 0);
    }
  for (int dst = 0; dst < T; ++dst) {
    auto& syncs = plan.tiles[dst].*which;
    for (std::size_t k = 0; k < syncs.size(); ++k)
      for (const Need& n : syncs[k].needs)
        for (const Piece& p : n.parts) {
          if (p.src == dst) continue;
          (plan.tiles[p.src].*which)[k].send[dst].push_back(p);
          syncs[k].recv_values[p.src] += p.rect.area() * plan.stack.map_c(p.map);
        }
  }
}

}  // namespace detail

// Build the plan. grid_rows x grid_cols tiles over the output of the last layer.
inline Status make_plan(const Stack& stack, int grid_rows, int grid_cols, const Grouping& fwd, const Grouping& bwd,
                        Plan& plan, bool input_grad = false) {
  EDGENN_TRY(stack.validate());
  const int L = stack.depth();
  EDGENN_TRY(validate_grouping(fwd, L, "forward"));
  EDGENN_TRY(validate_grouping(bwd, L, "backward"));
  EDGENN_CHECK(grid_rows > 0 && grid_cols > 0, Error::invalid_argument, "dist: the tile grid must be at least 1x1");
  EDGENN_CHECK(grid_rows <= stack.map_h(L) && grid_cols <= stack.map_w(L), Error::invalid_argument,
               "dist: more tile rows/columns than output rows/columns");
  plan = Plan{};
  plan.stack = stack;
  plan.grid_rows = grid_rows;
  plan.grid_cols = grid_cols;
  plan.fwd_groups = fwd;
  plan.bwd_groups = bwd;
  plan.input_grad = input_grad;

  // Core boundaries per map: stride-aligned (b at map m+1 -> b*s at map m), last one to the edge.
  std::vector<std::vector<int>> rb(L + 1), cb(L + 1);
  rb[L] = split_bounds(stack.map_h(L), grid_rows);
  cb[L] = split_bounds(stack.map_w(L), grid_cols);
  for (int m = L - 1; m >= 0; --m) {
    const LayerDesc& ly = stack.layers[m];
    rb[m] = rb[m + 1];
    cb[m] = cb[m + 1];
    for (int& b : rb[m]) b = std::min(b * ly.sh, stack.map_h(m));
    for (int& b : cb[m]) b = std::min(b * ly.sw, stack.map_w(m));
    rb[m].back() = stack.map_h(m);
    cb[m].back() = stack.map_w(m);
    for (int i = 0; i < grid_rows; ++i)
      EDGENN_CHECK(rb[m][i] < rb[m][i + 1], Error::invalid_argument,
                   "dist: the grid leaves a tile without rows at an earlier layer (padding larger than the stride)");
    for (int j = 0; j < grid_cols; ++j)
      EDGENN_CHECK(cb[m][j] < cb[m][j + 1], Error::invalid_argument,
                   "dist: the grid leaves a tile without columns at an earlier layer");
  }

  const int T = grid_rows * grid_cols;
  plan.tiles.resize(T);
  for (int t = 0; t < T; ++t) {
    TilePlan& tp = plan.tiles[t];
    tp.row = t / grid_cols;
    tp.col = t % grid_cols;
    tp.core.resize(L + 1);
    for (int m = 0; m <= L; ++m)
      tp.core[m] = Rect{Interval{rb[m][tp.row], rb[m][tp.row + 1] - 1}, Interval{cb[m][tp.col], cb[m][tp.col + 1] - 1}};
    // Forward: group end computes its core; earlier layers the region the later ones read
    // (and at least their own core, which peers may ask for).
    tp.fwd_out.assign(L, Rect{});
    tp.fwd_in.assign(L, Rect{});
    for (std::size_t g = 0; g < fwd.size(); ++g) {
      const int a = fwd[g], b = group_end(fwd, int(g), L);
      Rect out = tp.core[b + 1];
      for (int l = b; l >= a; --l) {
        tp.fwd_out[l] = out;
        tp.fwd_in[l] = intersect(stack.layers[l].need(out), stack.map_rect(l));
        out = hull(tp.fwd_in[l], tp.core[l]);
      }
    }
    // Backward: the group start produces dx on its input core; going up, g_l must cover the
    // outputs touching the dx region below and the core (weight gradient over owned outputs).
    tp.bwd_g.assign(L, Rect{});
    tp.bwd_dx.assign(L, Rect{});
    for (std::size_t g = 0; g < bwd.size(); ++g) {
      const int a = bwd[g], b = group_end(bwd, int(g), L);
      Rect dx = (a == 0 && !input_grad) ? Rect{} : tp.core[a];
      for (int l = a; l <= b; ++l) {
        const LayerDesc& ly = stack.layers[l];
        tp.bwd_dx[l] = dx;
        const Rect touched = dx.empty() ? Rect{} : ly.touched_by(dx, stack.map_h(l + 1), stack.map_w(l + 1));
        tp.bwd_g[l] = ly.has_weights() ? hull(touched, tp.core[l + 1]) : touched;
        if (tp.bwd_g[l].empty()) tp.bwd_g[l] = tp.core[l + 1];  // the group top always enters with its core
        dx = tp.bwd_g[l];
      }
    }
  }

  // Synchronisation points.
  for (int t = 0; t < T; ++t) {
    TilePlan& tp = plan.tiles[t];
    tp.fwd_sync.resize(fwd.size());
    for (std::size_t g = 0; g < fwd.size(); ++g) {
      const int a = fwd[g];
      // Group input: from the owners' cores of map a (map 0 is read locally by everyone).
      if (a > 0) tp.fwd_sync[g].needs.push_back(detail::make_need(plan, t, Kind::activation, a, tp.fwd_in[a], false));
    }
    tp.bwd_sync.resize(bwd.size());
    for (std::size_t g = 0; g < bwd.size(); ++g) {
      const int a = bwd[g], b = group_end(bwd, int(g), L);
      Sync& s = tp.bwd_sync[g];
      s.needs.push_back(detail::make_need(plan, t, Kind::gradient, b + 1, tp.bwd_g[b], false));
      // Forward state per map: one region (the hull of what the layers read), and none at all
      // when the tile holds it from its forward pass.
      std::vector<Rect> state(L + 1);
      for (int l = b; l >= a; --l) {
        const LayerDesc& ly = stack.layers[l];
        // Max pool: its input on the windows of the outputs whose gradient is routed.
        if (ly.kind == LayerKind::maxpool && !tp.bwd_dx[l].empty())
          state[l] = hull(state[l], intersect(ly.need(tp.bwd_g[l]), stack.map_rect(l)));
        // Inner layers with an activation: y_l on the region g_l is formed.
        if (l < b && ly.act != Activation::none) state[l + 1] = hull(state[l + 1], tp.bwd_g[l]);
      }
      for (int m = b + 1; m >= a; --m)
        if (!state[m].empty() && !plan.holds_forward(t, m, state[m]))
          s.needs.push_back(detail::make_need(plan, t, Kind::activation, m, state[m], true));
    }
  }
  detail::fill_sends(plan, &TilePlan::fwd_sync);
  detail::fill_sends(plan, &TilePlan::bwd_sync);
  return Status::ok();
}

// Values per batch item a tile receives in one step (forward + backward), and the number of
// peer messages (one per peer per synchronisation point).
struct TileTraffic {
  long fwd_values = 0, bwd_values = 0;
  int fwd_messages = 0, bwd_messages = 0;
};
inline TileTraffic tile_traffic(const Plan& plan, int t) {
  TileTraffic tr;
  for (const Sync& s : plan.tiles[t].fwd_sync)
    for (long v : s.recv_values) {
      tr.fwd_values += v;
      tr.fwd_messages += v > 0;
    }
  for (const Sync& s : plan.tiles[t].bwd_sync)
    for (long v : s.recv_values) {
      tr.bwd_values += v;
      tr.bwd_messages += v > 0;
    }
  return tr;
}

inline std::string to_string(const Rect& r) {
  if (r.empty()) return "[]";
  return "[" + std::to_string(r.r.lo) + ".." + std::to_string(r.r.hi) + "]x[" + std::to_string(r.c.lo) + ".." +
         std::to_string(r.c.hi) + "]";
}

}  // namespace edgenn::dist
