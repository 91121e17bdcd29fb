#define _POSIX_C_SOURCE 200809L
/* perfopt's cost per call from C: wall time of perfopt_model_run on a tiny
 * model minus the model's own time (the model report's mean latency).
 *   overhead TINY.pt ITERATIONS   -> one JSON line */
#include "perfopt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int iterations = atoi(argv[2]);
  perfopt_config config;
  perfopt_config_default(&config);
  config.read_environment = 0;
  perfopt_optimizer *optimizer = NULL;
  perfopt_model *model = NULL;
  if (perfopt_optimizer_new(&config, &optimizer) != PERFOPT_OK ||
      perfopt_model_load(optimizer, argv[1], "tiny", &model) != PERFOPT_OK ||
      perfopt_model_compile(model, "none", NULL, 0) != PERFOPT_OK) {
    fprintf(stderr, "overhead: %s\n", perfopt_last_error());
    return 1;
  }
  float x[4] = {1, 1, 1, 1};
  int64_t shape[2] = {1, 4};
  DLTensor input;
  memset(&input, 0, sizeof input);
  input.data = x;
  input.device.device_type = kDLCPU;
  input.ndim = 2;
  input.dtype.code = kDLFloat;
  input.dtype.bits = 32;
  input.dtype.lanes = 1;
  input.shape = shape;
  DLManagedTensor *out[1];
  size_t n = 0;
  for (int i = 0; i < 100; ++i) {
    perfopt_model_run(model, &input, 1, out, 1, &n);
    out[0]->deleter(out[0]);
  }
  double start = now_us();
  for (int i = 0; i < iterations; ++i) {
    perfopt_model_run(model, &input, 1, out, 1, &n);
    out[0]->deleter(out[0]);
  }
  double wall = (now_us() - start) / iterations;
  static char report[65536];
  size_t needed = 0;
  perfopt_model_report(model, report, sizeof report, &needed);
  const char *mean = strstr(report, "\"mean_ms\":");
  double model_ms = mean ? atof(mean + 10) : 0.0;
  printf("{\"c_call_us\":%.3f,\"model_us\":%.3f,\"c_overhead_us\":%.3f}\n", wall, model_ms * 1e3,
         wall - model_ms * 1e3);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
  return 0;
}
