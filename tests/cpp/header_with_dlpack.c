/* A program that includes dlpack.h itself (here libtorch's copy, DLPack 1.x)
 * before perfopt.h: perfopt's own DLPack definitions step aside and the
 * functions take dlpack.h's types. */
#include <ATen/dlpack.h>

#include "perfopt.h"

#include <stdio.h>

int main(void) {
  DLTensor tensor = {0};
  DLManagedTensor *outputs[1];
  size_t n = 0;
  (void)tensor;
  /* NULL model: the call fails cleanly, which is all this program checks. */
  perfopt_status status = perfopt_model_run(NULL, &tensor, 1, outputs, 1, &n);
  printf("with dlpack.h %d.%d: %s\n", DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION, perfopt_status_name(status));
  return status == PERFOPT_ERR_NULL_ARGUMENT ? 0 : 1;
}
