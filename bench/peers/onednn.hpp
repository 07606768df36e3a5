// oneDNN (Debian libdnnl-dev 2.6) behind the benchmark's Runner interface.
// Activations stay NHWC (the layout our kernels and XNNPACK use); oneDNN chooses its
// weights format (format_tag::any) and the weights are reordered into it once, in the
// constructor, like our packing and XNNPACK's. The scratchpad is user-managed and
// allocated up front, so run() only executes the primitive.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <string>
#include <unordered_map>

#include "../runner.hpp"

namespace edgenn_bench::onednn {

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};
inline Context& context() {
  static Context c;
  return c;
}

inline std::string version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
         (v->cpu_runtime == DNNL_RUNTIME_OMP ? " (OpenMP)" : "");
}

class Op : public Runner {
 public:
  explicit Op(const LayerData& d) {
    using dnnl::memory;
    using tag = memory::format_tag;
    const auto f32 = memory::data_type::f32;
    const auto inference = dnnl::prop_kind::forward_inference;
    Context& ctx = context();
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);

    const Layer& l = d.layer;
    const memory::dim N = d.batch, C = l.cin, H = l.h, W = l.w, OC = l.cout, K = l.k, S = l.stride, P = l.pad;
    const memory::dim OH = l.out_h(), OW = l.out_w();
    switch (l.family) {
      case Family::conv3x3:
      case Family::conv1x1:
      case Family::depthwise: {
        const bool depthwise = l.family == Family::depthwise;
        const memory::dims wdims = depthwise ? memory::dims{C, 1, 1, K, K} : memory::dims{OC, C, K, K};
        const memory::desc src({N, C, H, W}, f32, tag::nhwc), dst({N, OC, OH, OW}, f32, tag::nhwc);
        const memory::desc wany(wdims, f32, tag::any), bias({OC}, f32, tag::x);
        const dnnl::convolution_forward::desc cd(inference, dnnl::algorithm::convolution_direct, src, wany, bias, dst,
                                                 {S, S}, {P, P}, {P, P});
        const dnnl::convolution_forward::primitive_desc pd(cd, attr, ctx.engine);
        // Our canonical OHWI weights are oneDNN's ohwi (grouped: gohwi with o = i = 1).
        const memory user({wdims, f32, depthwise ? tag::gohwi : tag::ohwi}, ctx.engine, d.w.data());
        prim_ = dnnl::convolution_forward(pd);
        args_[DNNL_ARG_SRC] = memory(pd.src_desc(), ctx.engine, d.x.data());
        args_[DNNL_ARG_WEIGHTS] = reordered(user, pd.weights_desc());
        args_[DNNL_ARG_BIAS] = memory(pd.bias_desc(), ctx.engine, d.b.data());
        finish(pd);
        break;
      }
      case Family::fc: {
        const memory::desc src({N, C}, f32, tag::nc), dst({N, OC}, f32, tag::nc);
        const memory::desc wany({OC, C}, f32, tag::any), bias({OC}, f32, tag::x);
        const dnnl::inner_product_forward::desc ipd(inference, src, wany, bias, dst);
        const dnnl::inner_product_forward::primitive_desc pd(ipd, attr, ctx.engine);
        const memory user({{OC, C}, f32, tag::oi}, ctx.engine, d.w.data());
        prim_ = dnnl::inner_product_forward(pd);
        args_[DNNL_ARG_SRC] = memory(pd.src_desc(), ctx.engine, d.x.data());
        args_[DNNL_ARG_WEIGHTS] = reordered(user, pd.weights_desc());
        args_[DNNL_ARG_BIAS] = memory(pd.bias_desc(), ctx.engine, d.b.data());
        finish(pd);
        break;
      }
      case Family::gap:
      case Family::maxpool: {
        // Global average pooling is average pooling with the whole image as the window.
        const bool gap = l.family == Family::gap;
        const memory::dim kh = gap ? H : K, kw = gap ? W : K, s = gap ? 1 : S, p = gap ? 0 : P;
        const memory::dim oh = gap ? 1 : OH, ow = gap ? 1 : OW;
        const memory::desc src({N, C, H, W}, f32, tag::nhwc), dst({N, C, oh, ow}, f32, tag::nhwc);
        const dnnl::pooling_forward::desc pld(
            inference, gap ? dnnl::algorithm::pooling_avg_exclude_padding : dnnl::algorithm::pooling_max, src, dst,
            {s, s}, {kh, kw}, {p, p}, {p, p});
        const dnnl::pooling_forward::primitive_desc pd(pld, attr, ctx.engine);
        prim_ = dnnl::pooling_forward(pd);
        args_[DNNL_ARG_SRC] = memory(pd.src_desc(), ctx.engine, d.x.data());
        finish(pd);
        break;
      }
      case Family::add: {
        const memory::desc md({N, C, H, W}, f32, tag::nhwc);
        const dnnl::binary::desc bd(dnnl::algorithm::binary_add, md, md, md);
        const dnnl::binary::primitive_desc pd(bd, attr, ctx.engine);
        prim_ = dnnl::binary(pd);
        args_[DNNL_ARG_SRC_0] = memory(md, ctx.engine, d.x.data());
        args_[DNNL_ARG_SRC_1] = memory(md, ctx.engine, d.x2.data());
        finish(pd);
        break;
      }
      case Family::softmax: {
        const memory::desc md({N, C}, f32, tag::nc);
        const dnnl::softmax_forward::desc sd(inference, md, 1);
        const dnnl::softmax_forward::primitive_desc pd(sd, attr, ctx.engine);
        prim_ = dnnl::softmax_forward(pd);
        args_[DNNL_ARG_SRC] = memory(pd.src_desc(), ctx.engine, d.x.data());
        finish(pd);
        break;
      }
    }
  }

  void run() override {
    prim_.execute(context().stream, args_);
    context().stream.wait();
  }
  const float* output() const override { return static_cast<const float*>(dst_.get_data_handle()); }
  std::string info() const override { return impl_; }

 private:
  // Weights in the primitive's format: the user memory itself, or a reordered copy.
  static dnnl::memory reordered(const dnnl::memory& user, const dnnl::memory::desc& want) {
    if (user.get_desc() == want) return user;
    dnnl::memory src = user, packed(want, context().engine);  // handles: copies share the data
    dnnl::reorder(src, packed).execute(context().stream, src, packed);
    context().stream.wait();
    return packed;
  }
  template <class PD>
  void finish(const PD& pd) {
    dst_ = dnnl::memory(pd.dst_desc(), context().engine);
    args_[DNNL_ARG_DST] = dst_;
    args_[DNNL_ARG_SCRATCHPAD] = dnnl::memory(pd.scratchpad_desc(), context().engine);
    impl_ = pd.impl_info_str();
  }

  dnnl::primitive prim_;
  std::unordered_map<int, dnnl::memory> args_;
  dnnl::memory dst_;
  std::string impl_;
};

}  // namespace edgenn_bench::onednn
