/* Replays, in C, the C calls each XCTest in bindings/swift/Tests makes
 * through the PerfOpt Swift module, in the same order with the same
 * arguments, against the real library: no Swift toolchain reaches CI, so this
 * is how those sequences are run. Keep each function in step with its test. */
#include "perfopt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define EXPECT(cond)                                                                   \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: %s (%s)\n", __FILE__, __LINE__, #cond,                   \
              perfopt_last_error() ? perfopt_last_error() : "no message");             \
      ++failures;                                                                      \
      return;                                                                          \
    }                                                                                  \
  } while (0)

static char fixtures[1024];

static perfopt_optimizer *cpu_optimizer(void) {
  perfopt_config config;
  perfopt_optimizer *optimizer = NULL;
  if (perfopt_config_default(&config) != PERFOPT_OK) return NULL;
  config.cudnn_benchmark = PERFOPT_AUTO;
  config.tf32 = PERFOPT_AUTO;
  config.cpu_optimization = PERFOPT_AUTO;
  config.intra_op_threads = 0;
  config.malloc_tuning = PERFOPT_AUTO;
  config.read_environment = 0;
  config.device = "cpu";
  config.compile_mode = NULL;
  return perfopt_optimizer_new(&config, &optimizer) == PERFOPT_OK ? optimizer : NULL;
}

/* Optimizer.reportJSON: readReport's loop. */
static char *report_of(perfopt_optimizer *optimizer) {
  size_t size = 4096, needed = 0;
  for (;;) {
    char *buf = calloc(size, 1);
    perfopt_status status = perfopt_optimizer_report(optimizer, buf, size, &needed);
    if (status == PERFOPT_ERR_BUFFER_TOO_SMALL && needed > size) {
      free(buf);
      size = needed * 2;
      continue;
    }
    if (status != PERFOPT_OK) {
      free(buf);
      return NULL;
    }
    return buf;
  }
}

static DLTensor host(float *data, int64_t *shape, int32_t ndim) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = kDLCPU;
  t.ndim = ndim;
  t.dtype.code = kDLFloat;
  t.dtype.bits = 32;
  t.dtype.lanes = 1;
  t.shape = shape;
  return t;
}

static void test_version_and_abi(void) {
  EXPECT(perfopt_abi_version() == 2);
  EXPECT(strncmp(perfopt_version(), "perfopt 0.1.0", 13) == 0);
}

static void test_optimizer_report_on_cpu(void) {
  EXPECT(perfopt_abi_version() == 2);
  perfopt_optimizer *optimizer = cpu_optimizer();
  EXPECT(optimizer != NULL);
  char *report = report_of(optimizer);
  EXPECT(report != NULL);
  EXPECT(strstr(report, "\"kind\":\"cpu\"") != NULL);
  EXPECT(strstr(report, "\"service_rule\":1") != NULL);
  EXPECT(strstr(report, "\"setting\":\"cudnn_benchmark\"") != NULL);
  free(report);
  int32_t batch = 0;
  EXPECT(perfopt_optimal_batch_size(optimizer, &batch) == PERFOPT_OK && batch == 1);
  perfopt_optimizer_free(optimizer);
}

static void test_unknown_device_throws(void) {
  perfopt_config config;
  perfopt_optimizer *optimizer = NULL;
  EXPECT(perfopt_config_default(&config) == PERFOPT_OK);
  config.read_environment = 0;
  config.device = "tpu";
  perfopt_status status = perfopt_optimizer_new(&config, &optimizer);
  EXPECT(status == PERFOPT_ERR_INVALID_ARGUMENT);
  EXPECT(strstr(perfopt_last_error(), "tpu") != NULL);
  EXPECT(strcmp(perfopt_status_name(status), "PERFOPT_ERR_INVALID_ARGUMENT") == 0);
  EXPECT(optimizer == NULL);
}

static void test_inference_scope_nests(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_scope *outer = NULL, *inner = NULL;
  EXPECT(perfopt_inference_enter(optimizer, &outer) == PERFOPT_OK);
  EXPECT(perfopt_inference_enter(optimizer, &inner) == PERFOPT_OK);
  EXPECT(perfopt_inference_exit(inner) == PERFOPT_OK);
  EXPECT(perfopt_inference_exit(outer) == PERFOPT_OK);
  perfopt_optimizer_free(optimizer);
}

static void test_vocoder_runs_and_reports(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  char path[1200];
  snprintf(path, sizeof path, "%s/vocoder.pt", fixtures);
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, path, "vocoder", &model) == PERFOPT_OK);
  static float mel[2 * 80 * 32];
  for (size_t i = 0; i < sizeof mel / sizeof mel[0]; ++i) mel[i] = 0.1f;
  int64_t shape[3] = {2, 80, 32};
  DLTensor input = host(mel, shape, 3);
  EXPECT(perfopt_model_compile(model, "default", &input, 1) == PERFOPT_OK);
  char warm[65536];
  size_t needed = 0;
  EXPECT(perfopt_model_warmup(model, &input, 1, 3, warm, sizeof warm, &needed) == PERFOPT_OK);
  EXPECT(strstr(warm, "\"success\":true") != NULL);
  perfopt_scope *scope = NULL;
  EXPECT(perfopt_inference_enter(optimizer, &scope) == PERFOPT_OK);
  DLManagedTensor *outputs[8] = {0};
  size_t count = 0;
  perfopt_status status = perfopt_model_run(model, &input, 1, outputs, 8, &count);
  EXPECT(perfopt_inference_exit(scope) == PERFOPT_OK);
  EXPECT(status == PERFOPT_OK && count == 1);
  const DLTensor *out = &outputs[0]->dl_tensor;
  EXPECT(out->ndim == 3 && out->shape[0] == 2 && out->shape[1] == 1 && out->shape[2] == 512);
  outputs[0]->deleter(outputs[0]);
  char report[65536];
  EXPECT(perfopt_model_report(model, report, sizeof report, &needed) == PERFOPT_OK);
  EXPECT(strstr(report, "\"calls\":1,") != NULL);
  EXPECT(strstr(report, "\"requested_mode\":\"default\"") != NULL);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

static void test_bad_inputs_throw_and_the_model_stays_usable(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  char path[1200];
  snprintf(path, sizeof path, "%s/two_inputs.pt", fixtures);
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, path, NULL, &model) == PERFOPT_OK);
  static float x[2 * 16], y[2 * 4];
  for (int i = 0; i < 32; ++i) x[i] = 1;
  for (int i = 0; i < 8; ++i) y[i] = 1;
  int64_t xs[2] = {2, 16}, ys[2] = {2, 4};
  DLTensor inputs[2] = {host(x, xs, 2), host(y, ys, 2)};
  DLManagedTensor *outputs[8] = {0};
  size_t count = 0;
  EXPECT(perfopt_model_run(model, inputs, 1, outputs, 8, &count) == PERFOPT_ERR_INVALID_ARGUMENT);
  EXPECT(perfopt_model_compile(model, "fastest", NULL, 0) == PERFOPT_ERR_INVALID_ARGUMENT);
  EXPECT(perfopt_model_run(model, inputs, 2, outputs, 8, &count) == PERFOPT_OK && count == 2);
  outputs[0]->deleter(outputs[0]);
  outputs[1]->deleter(outputs[1]);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

static void test_missing_model_file_throws(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, "/nonexistent/model.pt", NULL, &model) == PERFOPT_ERR_FILE_NOT_FOUND);
  perfopt_optimizer_free(optimizer);
}

int main(void) {
  const char *dir = getenv("PERFOPT_FIXTURES");
  snprintf(fixtures, sizeof fixtures, "%s", dir ? dir : "build/fixtures");
  struct {
    const char *name;
    void (*run)(void);
  } tests[] = {
      {"testVersionAndABI", test_version_and_abi},
      {"testOptimizerReportOnCPU", test_optimizer_report_on_cpu},
      {"testUnknownDeviceThrows", test_unknown_device_throws},
      {"testInferenceScopeNests", test_inference_scope_nests},
      {"testVocoderRunsAndReports", test_vocoder_runs_and_reports},
      {"testBadInputsThrowAndTheModelStaysUsable", test_bad_inputs_throw_and_the_model_stays_usable},
      {"testMissingModelFileThrows", test_missing_model_file_throws},
  };
  int passed = 0, failed = 0;
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; ++i) {
    int before = failures;
    tests[i].run();
    if (failures == before) {
      ++passed;
      printf("ok   %s\n", tests[i].name);
    } else {
      ++failed;
      printf("FAIL %s\n", tests[i].name);
    }
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
