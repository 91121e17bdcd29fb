// AOTInductor packages (.pt2): torch.compile ahead of time, loaded by
// libtorch's package loader and run as tensors in, tensors out. Rust twin:
// src/torch/aoti.rs.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <memory>
#include <mutex>
#include <sstream>

#include "common.h"
#include "values.h"

struct pshim_aoti {
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  std::string description;
  // The folder the loader unpacked into, now perfopt's to remove.
  std::string folder;
};

using perfopt_shim::guarded;

namespace {

// The loader's private temp_dir_, reached the one way C++ allows (an explicit
// instantiation may name a private member): perfopt takes the folder over so
// that a forked child's free does not remove its parent's folder, and so
// that it is removed as soon as nothing needs it.
using TempDirMember = std::string torch::inductor::AOTIModelPackageLoader::*;
TempDirMember temp_dir_member();
template <TempDirMember Member>
struct TempDirAccess {
  friend TempDirMember temp_dir_member() { return Member; }
};
template struct TempDirAccess<&torch::inductor::AOTIModelPackageLoader::temp_dir_>;

// Loaders are built one at a time: construction unpacks the package and
// dlopens its library, and Triton's PyTorch backend found concurrent
// construction unsafe.
std::mutex construction;

std::string describe(torch::inductor::AOTIModelPackageLoader &loader) {
  using perfopt_shim::json_string;
  std::ostringstream out;
  out << "{\"metadata\":{";
  bool first = true;
  for (const auto &entry : loader.get_metadata()) {
    if (!first) out << ",";
    first = false;
    out << json_string(entry.first) << ":" << json_string(entry.second);
  }
  out << "},\"call_spec\":[";
  first = true;
  for (const auto &spec : loader.get_call_spec()) {
    if (!first) out << ",";
    first = false;
    out << json_string(spec);
  }
  out << "]}";
  return out.str();
}

}  // namespace

extern "C" {

int pshim_aoti_load(const char *path, const char *model_name, int device_type, int device_index, size_t runners,
                    pshim_aoti **out) {
  return guarded([&] {
    std::lock_guard<std::mutex> lock(construction);
    auto package = std::make_unique<pshim_aoti>();
    package->loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
        path, model_name, /*run_single_threaded=*/false, runners,
        static_cast<c10::DeviceIndex>(device_type == 1 ? device_index : -1));
    package->description = describe(*package->loader);
    package->folder.swap((*package->loader).*temp_dir_member());
    *out = package.release();
  });
}

void pshim_aoti_free(pshim_aoti *package) {
  try {
    delete package;
  } catch (...) {
  }
}

int pshim_aoti_describe(const pshim_aoti *package, char *buf, size_t len, size_t *needed) {
  return guarded([&] { perfopt_shim::write_text(package->description, buf, len, needed); });
}

int pshim_aoti_folder(const pshim_aoti *package, char *buf, size_t len, size_t *needed) {
  return guarded([&] { perfopt_shim::write_text(package->folder, buf, len, needed); });
}

int pshim_aoti_run(const pshim_aoti *package, void *const *inputs, size_t n_inputs, pshim_node_sink sink,
                   void *ctx) {
  return guarded([&] {
    std::vector<at::Tensor> outputs = package->loader->run(perfopt_shim::tensors_of_ptrs(inputs, n_inputs));
    for (at::Tensor &t : outputs) {
      pshim_node node{};
      node.kind = PSHIM_TENSOR;
      node.tensor = new at::Tensor(std::move(t));
      sink(ctx, &node);
    }
  });
}

}  // extern "C"
