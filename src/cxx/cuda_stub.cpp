// The CUDA section of shim.h for builds without CUDA headers: every call is
// PSHIM_UNSUPPORTED with the reason.
#include "common.h"

namespace {
int unsupported() {
  perfopt_shim::set_last_error("perfopt was built without CUDA headers: no CUDA streams or graphs");
  return PSHIM_UNSUPPORTED;
}
}  // namespace

extern "C" {
int pshim_cuda_device_properties(int32_t, char *, size_t, int32_t *, int32_t *, uint64_t *, int32_t *) {
  return unsupported();
}
int pshim_cuda_stream_synchronize(int32_t) { return unsupported(); }
int pshim_capture_start(int32_t, pshim_capture **) { return unsupported(); }
int pshim_capture_begin(pshim_capture *) { return unsupported(); }
int pshim_capture_end(pshim_capture *, void *const *, size_t, void *const *, size_t, pshim_graph **) {
  return unsupported();
}
void pshim_capture_abort(pshim_capture *) {}
int pshim_graph_replay(pshim_graph *, void *const *, size_t, pshim_node_sink, void *) { return unsupported(); }
void pshim_graph_free(pshim_graph *) {}
}
