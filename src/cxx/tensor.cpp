// DLPack in and out, and storage identity (so that perfopt can tell an
// output that shares memory with an input or a parameter). Rust twin:
// src/torch/tensor.rs.
#include <ATen/DLConvertor.h>
#include <ATen/Functions.h>

#include <memory>

#include "common.h"

using perfopt_shim::guarded;

extern "C" {

int pshim_tensor_from_dlpack(const void *dl_tensor, void **out) {
  return guarded([&] {
    const DLTensor &dl = *static_cast<const DLTensor *>(dl_tensor);
    auto options = at::TensorOptions()
                       .dtype(at::toScalarType(dl.dtype))
                       .device(at::dlDeviceToTorchDevice(dl.device.device_type,
                                                         static_cast<c10::DeviceIndex>(dl.device.device_id)));
    at::IntArrayRef sizes(dl.shape, dl.ndim);
    void *data = static_cast<char *>(dl.data) + dl.byte_offset;
    at::Tensor view = dl.strides ? at::from_blob(data, sizes, at::IntArrayRef(dl.strides, dl.ndim), options)
                                 : at::from_blob(data, sizes, options);
    *out = new at::Tensor(std::move(view));
  });
}

int pshim_tensor_from_owned(void *data, const int64_t *sizes, size_t ndim, int scalar_type, void *owner,
                            void (*release)(void *), void **out) {
  return guarded([&] {
    // The tensor owns `owner` from here: released with the storage, or now
    // when the tensor cannot be made, exactly once either way (from_blob
    // may fail after its storage took the deleter, which then runs).
    struct Owned {
      void *owner;
      void (*release)(void *);
      bool released = false;
      void release_once() {
        if (!released) {
          released = true;
          release(owner);
        }
      }
    };
    std::shared_ptr<Owned> held;
    try {
      held = std::make_shared<Owned>(Owned{owner, release});
    } catch (...) {
      release(owner);
      throw;
    }
    try {
      auto options = at::TensorOptions().dtype(static_cast<at::ScalarType>(scalar_type));
      at::Tensor t = at::from_blob(
          data, at::IntArrayRef(sizes, ndim), [held](void *) { held->release_once(); }, options);
      *out = new at::Tensor(std::move(t));
    } catch (...) {
      held->release_once();
      throw;
    }
  });
}

int pshim_tensor_to_dlpack(const void *tensor, void **out_managed) {
  return guarded([&] { *out_managed = at::toDLPack(*static_cast<const at::Tensor *>(tensor)); });
}

int pshim_tensor_holders(const void *tensor, const void **storage, size_t *storage_holders, const void **impl,
                         size_t *impl_holders) {
  return guarded([&] {
    const at::Tensor &t = *static_cast<const at::Tensor *>(tensor);
    *storage = nullptr;
    *storage_holders = 0;
    *impl = t.defined() ? t.unsafeGetTensorImpl() : nullptr;
    *impl_holders = t.defined() ? t.use_count() : 0;
    if (t.defined() && t.has_storage()) {
      const c10::Storage &s = t.storage();
      *storage = s.unsafeGetStorageImpl();
      *storage_holders = s.use_count();
    }
  });
}

}  // extern "C"
