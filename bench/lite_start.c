#define _POSIX_C_SOURCE 200809L
/* One process's start and calls, for bench/lite.py: load an optimizer and a
 * model, run it once (the first output), then time ITERATIONS calls.
 *   lite_start MODEL ITERATIONS SHAPE...   (each SHAPE "1x512", float32)
 * prints one JSON line: the library's version, the microseconds from main to
 * the first output, and the median call. The process's own start (loading
 * libperfopt, and libtorch for the full library) is timed by the driver. */
#include "perfopt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_INPUTS = 8, MAX_DIMS = 8 };

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int run_once(perfopt_model *model, DLTensor *inputs, size_t count) {
  DLManagedTensor *outputs[8];
  size_t n = 0;
  if (perfopt_model_run(model, inputs, count, outputs, 8, &n) != PERFOPT_OK) return 0;
  for (size_t k = 0; k < n; ++k) outputs[k]->deleter(outputs[k]);
  return 1;
}

int main(int argc, char **argv) {
  double started = now_us();
  if (argc < 4 || argc - 3 > MAX_INPUTS) return 2;
  int iterations = atoi(argv[2]);
  size_t count = (size_t)(argc - 3);
  DLTensor inputs[MAX_INPUTS];
  int64_t shapes[MAX_INPUTS][MAX_DIMS];
  memset(inputs, 0, sizeof inputs);
  for (size_t i = 0; i < count; ++i) {
    int ndim = 0;
    size_t elements = 1;
    for (char *p = argv[3 + i]; *p && ndim < MAX_DIMS; ++ndim) {
      shapes[i][ndim] = strtoll(p, &p, 10);
      elements *= (size_t)shapes[i][ndim];
      if (*p == 'x') ++p;
    }
    float *data = malloc(elements * sizeof(float));
    for (size_t e = 0; e < elements; ++e) data[e] = (float)((int)(e % 17) - 8) / 8.0f;
    inputs[i].data = data;
    inputs[i].device.device_type = kDLCPU;
    inputs[i].ndim = ndim;
    inputs[i].dtype.code = kDLFloat;
    inputs[i].dtype.bits = 32;
    inputs[i].dtype.lanes = 1;
    inputs[i].shape = shapes[i];
  }
  perfopt_config config;
  perfopt_config_default(&config);
  config.device = "cpu";
  config.read_environment = 0;
  config.intra_op_threads = 1;
  perfopt_optimizer *optimizer = NULL;
  perfopt_model *model = NULL;
  if (perfopt_optimizer_new(&config, &optimizer) != PERFOPT_OK ||
      perfopt_model_load(optimizer, argv[1], NULL, &model) != PERFOPT_OK || !run_once(model, inputs, count)) {
    fprintf(stderr, "lite_start: %s\n", perfopt_last_error());
    return 1;
  }
  double first_output = now_us() - started;
  double *times = malloc((size_t)iterations * sizeof(double));
  for (int i = 0; i < iterations; ++i) {
    double t = now_us();
    if (!run_once(model, inputs, count)) return 1;
    times[i] = now_us() - t;
  }
  qsort(times, (size_t)iterations, sizeof(double), by_value);
  printf("{\"version\": \"%s\", \"first_output_us\": %.1f, \"call_us\": %.2f}\n", perfopt_version(), first_output,
         times[iterations / 2]);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
  return 0;
}
