/* Replays, in C, the C calls each XCTest in bindings/swift/Tests makes
 * through the PerfOpt Swift module, in the same order with the same
 * arguments, against the real library: no Swift toolchain reaches CI, so this
 * is how those sequences are run. Keep each function in step with its test.
 *
 * What the Swift side does that is not a perfopt call (decoding JSON, reading
 * .npy files, comparing floats) is done here with small C equivalents. */
#define _POSIX_C_SOURCE 200809L
#include "perfopt.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static int skipped = 0;
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

static const char *fixture(const char *name) {
  static char path[2048];
  snprintf(path, sizeof path, "%s/%s", fixtures, name);
  return path;
}

/* Optimizer(device:readEnvironment: false): checkABI, perfopt_config_init
 * with C's sizeof (Swift's MemoryLayout.stride), the fields the initializer
 * sets, perfopt_optimizer_new. */
static perfopt_status optimizer_on(const char *device, perfopt_optimizer **out) {
  perfopt_config config;
  *out = NULL;
  if (perfopt_abi_version() != 6) return PERFOPT_ERR_INTERNAL;
  perfopt_status status = perfopt_config_init(&config, sizeof config);
  if (status != PERFOPT_OK) return status;
  config.cudnn_benchmark = PERFOPT_AUTO;
  config.tf32 = PERFOPT_AUTO;
  config.cpu_optimization = PERFOPT_AUTO;
  config.torch_compile = PERFOPT_AUTO;
  config.intra_op_threads = 0;
  config.inter_op_threads = 0;
  config.malloc_tuning = PERFOPT_AUTO;
  config.read_environment = 0;
  config.device = device;
  config.compile_mode = NULL;
  config.onnxruntime_library = NULL;
  config.tuning_cache_dir = NULL;
  return perfopt_optimizer_new(&config, out);
}

static perfopt_optimizer *cpu_optimizer(void) {
  perfopt_optimizer *optimizer = NULL;
  return optimizer_on("cpu", &optimizer) == PERFOPT_OK ? optimizer : NULL;
}

/* readReport's loop (Errors.swift) over the report functions, which do no
 * work but write text: 4096 bytes first, then what `needed` says, doubled. */
typedef perfopt_status (*report_fn)(const void *object, int32_t kind, char *buf, size_t len, size_t *needed);

static perfopt_status optimizer_report(const void *o, int32_t kind, char *buf, size_t len, size_t *needed) {
  (void)kind;
  return perfopt_optimizer_report(o, buf, len, needed);
}
static perfopt_status model_report(const void *m, int32_t kind, char *buf, size_t len, size_t *needed) {
  (void)kind;
  return perfopt_model_report(m, buf, len, needed);
}
static perfopt_status model_methods(const void *m, int32_t kind, char *buf, size_t len, size_t *needed) {
  (void)kind;
  return perfopt_model_methods(m, buf, len, needed);
}
static perfopt_status last_report(const void *m, int32_t kind, char *buf, size_t len, size_t *needed) {
  return perfopt_model_last_report(m, kind, buf, len, needed);
}

/* The text (free() it), or NULL with *status set. */
static char *read_report(report_fn fn, const void *object, int32_t kind, perfopt_status *status) {
  size_t size = 4096, needed = 0;
  for (;;) {
    char *buf = calloc(size, 1);
    *status = fn(object, kind, buf, size, &needed);
    if (*status == PERFOPT_ERR_BUFFER_TOO_SMALL && needed > size) {
      free(buf);
      size = needed * 2;
      continue;
    }
    if (*status != PERFOPT_OK) {
      free(buf);
      return NULL;
    }
    return buf;
  }
}

static char *report_of(perfopt_optimizer *optimizer) {
  perfopt_status status;
  return read_report(optimizer_report, optimizer, 0, &status);
}

/* Model.keptReport: the status of a call that did work and wrote into `buf`;
 * on BUFFER_TOO_SMALL the kept report is read back (never run again). */
static char *kept_report(perfopt_model *model, int32_t kind, perfopt_status first, const char *buf,
                         perfopt_status *status) {
  if (first == PERFOPT_ERR_BUFFER_TOO_SMALL) return read_report(last_report, model, kind, status);
  *status = first;
  if (first != PERFOPT_OK) return NULL;
  char *copy = malloc(strlen(buf) + 1);
  strcpy(copy, buf);
  return copy;
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

/* A float32 C-order .npy array (the test's Npy). */
typedef struct {
  float *data;
  int64_t shape[8];
  int32_t ndim;
  size_t count;
} npy;

static int npy_load(const char *name, npy *out) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(fixture(name), "rb");
  if (!f) return 0;
  unsigned char head[12];
  int ok = fread(head, 1, 12, f) == 12 && head[0] == 0x93 && memcmp(head + 1, "NUMPY", 5) == 0;
  size_t start = head[6] == 1 ? 10 : 12;
  size_t header_len = (size_t)head[8] | (size_t)head[9] << 8;
  if (head[6] != 1) header_len |= (size_t)head[10] << 16 | (size_t)head[11] << 24;
  char *header = ok ? calloc(header_len + 1, 1) : NULL;
  ok = ok && header && fseek(f, (long)start, SEEK_SET) == 0 && fread(header, 1, header_len, f) == header_len;
  ok = ok && strstr(header, "'descr': '<f4'") && strstr(header, "'fortran_order': False");
  const char *shape = ok ? strstr(header, "'shape': (") : NULL;
  if (shape) {
    const char *p = shape + strlen("'shape': (");
    out->count = 1;
    while (*p && *p != ')' && out->ndim < 8) {
      char *end;
      long long dim = strtoll(p, &end, 10);
      if (end == p) break;
      out->shape[out->ndim++] = dim;
      out->count *= (size_t)dim;
      p = end;
      while (*p == ',' || *p == ' ') ++p;
    }
    out->data = malloc(out->count * sizeof(float) + 1);
    ok = fread(out->data, sizeof(float), out->count, f) == out->count;
  }
  free(header);
  fclose(f);
  return ok && shape;
}

static DLTensor npy_tensor(npy *a) { return host(a->data, a->shape, a->ndim); }

/* Npy.first(along:): index 0 along `dim`, kept as a dimension of size 1. */
static npy npy_first(const npy *a, int32_t dim) {
  npy out = *a;
  size_t outer = 1, inner = 1;
  for (int32_t d = 0; d < dim; ++d) outer *= (size_t)a->shape[d];
  for (int32_t d = dim + 1; d < a->ndim; ++d) inner *= (size_t)a->shape[d];
  size_t span = (size_t)a->shape[dim] * inner;
  out.shape[dim] = 1;
  out.count = outer * inner;
  out.data = malloc(out.count * sizeof(float) + 1);
  for (size_t o = 0; o < outer; ++o) memcpy(out.data + o * inner, a->data + o * span, inner * sizeof(float));
  return out;
}

static int same_shape(const DLTensor *t, const npy *a) {
  if (t->ndim != a->ndim) return 0;
  for (int32_t d = 0; d < t->ndim; ++d)
    if (t->shape[d] != a->shape[d]) return 0;
  return 1;
}

static size_t numel(const DLTensor *t) {
  size_t n = 1;
  for (int32_t d = 0; d < t->ndim; ++d) n *= (size_t)t->shape[d];
  return n;
}

/* max |a - b| / max |b| (the test's relativeError), over an output's floats. */
static double relative_error(const DLTensor *t, const npy *b) {
  if (numel(t) != b->count) return INFINITY;
  const float *a = (const float *)((const char *)t->data + t->byte_offset);
  double diff = 0, scale = 0;
  for (size_t i = 0; i < b->count; ++i) {
    double d = fabs((double)a[i] - (double)b->data[i]);
    if (d > diff) diff = d;
    if (fabs((double)b->data[i]) > scale) scale = fabs((double)b->data[i]);
  }
  double error = diff / (scale > 2.2250738585072014e-308 ? scale : 2.2250738585072014e-308);
  return isnan(error) ? INFINITY : error;
}

/* perfopt_value as CallArena.describe fills it. */
static perfopt_value value_of(int32_t kind) {
  perfopt_value v;
  memset(&v, 0, sizeof v);
  v.struct_size = sizeof(perfopt_value);
  v.kind = kind;
  return v;
}
static perfopt_value v_tensor(const DLTensor *t) {
  perfopt_value v = value_of(PERFOPT_VALUE_TENSOR);
  v.tensor = t;
  return v;
}
static perfopt_value v_int(int64_t i) {
  perfopt_value v = value_of(PERFOPT_VALUE_INT);
  v.int_value = i;
  return v;
}
static perfopt_value v_double(double d) {
  perfopt_value v = value_of(PERFOPT_VALUE_DOUBLE);
  v.double_value = d;
  return v;
}
static perfopt_value v_bool(int b) {
  perfopt_value v = value_of(PERFOPT_VALUE_BOOL);
  v.int_value = b ? 1 : 0;
  return v;
}
static perfopt_value v_string(const char *s) {
  perfopt_value v = value_of(PERFOPT_VALUE_STRING);
  v.string = s;
  v.length = strlen(s);
  return v;
}
static perfopt_value v_items(int32_t kind, perfopt_value *items, size_t n) {
  perfopt_value v = value_of(kind);
  v.items = items;
  v.length = n;
  return v;
}

/* takeResult's step for a tensor: the Output takes the DLManagedTensor. */
static DLManagedTensor *take(perfopt_value *v) {
  DLManagedTensor *managed = v->managed;
  v->managed = NULL;
  return managed;
}

static void release(DLManagedTensor *managed) {
  if (managed && managed->deleter) managed->deleter(managed);
}

/* ------------------------------------------------------------------------ */

static void test_version_and_abi(void) {
  EXPECT(perfopt_abi_version() == 6);
  EXPECT(strncmp(perfopt_version(), "perfopt 0.1.0", 13) == 0);
}

static void test_optimizer_report_on_cpu(void) {
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
  perfopt_optimizer *optimizer = NULL;
  perfopt_status status = optimizer_on("tpu", &optimizer);
  EXPECT(status == PERFOPT_ERR_INVALID_ARGUMENT);
  EXPECT(strstr(perfopt_last_error(), "tpu") != NULL);
  EXPECT(optimizer == NULL);
  EXPECT(strcmp(perfopt_status_name(status), "PERFOPT_ERR_INVALID_ARGUMENT") == 0);
  EXPECT(strcmp(perfopt_status_message(status), "An argument is out of range or names something unknown.") == 0);
}

static void test_defaults_are_the_librarys(void) {
  perfopt_config config;
  EXPECT(perfopt_config_default(&config) == PERFOPT_OK);
  EXPECT(config.read_environment == 1);
  EXPECT(config.device == NULL);
  EXPECT(config.cudnn_benchmark == PERFOPT_AUTO);
  EXPECT(config.torch_compile == PERFOPT_AUTO);
  EXPECT(config.compile_mode == NULL);
  EXPECT(config.intra_op_threads == 0);
  perfopt_model_options options;
  EXPECT(perfopt_model_options_default(&options) == PERFOPT_OK);
  EXPECT(options.outputs_on_device == 0);
  EXPECT(options.error_tolerance == 1e-3);
  EXPECT(options.graph_cache_size == 8);
  EXPECT(options.graph_warmup_runs == 3);
  EXPECT(options.memory_margin == 0.1);
  EXPECT(options.tuning_budget_ms == 0);
  EXPECT(options.tuning_cache_dir == NULL);
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

struct scope_box {
  perfopt_optimizer *optimizer;
  perfopt_scope *scope;
};

static void *enter_elsewhere(void *arg) {
  struct scope_box *box = arg;
  if (perfopt_inference_enter(box->optimizer, &box->scope) != PERFOPT_OK) box->scope = NULL;
  return NULL;
}

static void test_inference_scope_objects(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_scope *outer = NULL, *inner = NULL, *dropped = NULL;
  EXPECT(perfopt_inference_enter(optimizer, &outer) == PERFOPT_OK);
  EXPECT(perfopt_inference_enter(optimizer, &inner) == PERFOPT_OK);
  EXPECT(perfopt_inference_exit(outer) == PERFOPT_ERR_SCOPE_ORDER);
  EXPECT(perfopt_inference_exit(inner) == PERFOPT_OK);
  EXPECT(perfopt_inference_exit(outer) == PERFOPT_OK);
  EXPECT(perfopt_inference_enter(optimizer, &dropped) == PERFOPT_OK);
  perfopt_scope_free(dropped);
  struct scope_box box = {optimizer, NULL};
  pthread_t thread;
  EXPECT(pthread_create(&thread, NULL, enter_elsewhere, &box) == 0);
  EXPECT(pthread_join(thread, NULL) == 0);
  EXPECT(box.scope != NULL);
  perfopt_scope_free(box.scope);
  perfopt_optimizer_free(optimizer);
}

static void test_vocoder_runs_and_reports(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, fixture("vocoder.pt"), "vocoder", &model) == PERFOPT_OK);
  static float mel[2 * 80 * 32];
  for (size_t i = 0; i < sizeof mel / sizeof mel[0]; ++i) mel[i] = 0.1f;
  int64_t shape[3] = {2, 80, 32};
  DLTensor input = host(mel, shape, 3);
  EXPECT(perfopt_model_compile(model, "default", &input, 1) == PERFOPT_OK);
  static char warm[65536];
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
  release(outputs[0]);
  perfopt_status report_status;
  char *report = read_report(model_report, model, 0, &report_status);
  EXPECT(report != NULL);
  EXPECT(strstr(report, "\"calls\":1,") != NULL);
  EXPECT(strstr(report, "\"requested_mode\":\"default\"") != NULL);
  free(report);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

static void test_bad_inputs_throw_and_the_model_stays_usable(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, fixture("two_inputs.pt"), NULL, &model) == PERFOPT_OK);
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
  release(outputs[0]);
  release(outputs[1]);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

static void test_missing_model_file_throws(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, "/nonexistent/model.pt", NULL, &model) == PERFOPT_ERR_FILE_NOT_FOUND);
  perfopt_optimizer_free(optimizer);
}

static void test_a_directory_is_not_a_model_file(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, fixtures, NULL, &model) == PERFOPT_ERR_NOT_A_FILE);
  perfopt_optimizer_free(optimizer);
}

static void test_stateful_model_streams_with_values_and_methods(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, fixture("stateful.pt"), NULL, &model) == PERFOPT_OK);
  perfopt_status status;
  char *methods = read_report(model_methods, model, 0, &status);
  EXPECT(methods != NULL);
  EXPECT(strstr(methods, "{\"name\":\"forward\",") != NULL);
  EXPECT(strstr(methods, "{\"name\":\"reset_states\",") != NULL);
  EXPECT(strstr(methods, "{\"name\":\"encode\",") != NULL);
  /* forward's arguments: x, then sr of type int (self left out). */
  const char *forward = strstr(methods, "{\"name\":\"forward\",");
  EXPECT(strstr(forward, "\"arguments\":[{\"name\":\"x\",\"type\":\"Tensor\",\"default\":null},"
                         "{\"name\":\"sr\",\"type\":\"int\",\"default\":null}]") != NULL);
  free(methods);
  static npy chunks[20], expected[20];
  static DLTensor chunk_tensors[20];
  for (int i = 0; i < 20; ++i) {
    char name[64];
    snprintf(name, sizeof name, "stateful.chunk%d.npy", i);
    EXPECT(npy_load(name, &chunks[i]));
    chunk_tensors[i] = npy_tensor(&chunks[i]);
  }
  for (int i = 0; i < 20; ++i) {
    char name[64];
    snprintf(name, sizeof name, "stateful.expected%d.npy", i);
    EXPECT(npy_load(name, &expected[i]));
  }
  perfopt_value warm[2] = {v_tensor(&chunk_tensors[0]), v_int(16000)};
  EXPECT(perfopt_model_compile_args(model, "default", warm, 2) == PERFOPT_OK);
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 20; ++i) {
      perfopt_value args[2] = {v_tensor(&chunk_tensors[i]), v_int(16000)};
      perfopt_value *result = NULL;
      EXPECT(perfopt_model_call(model, NULL, args, 2, &result) == PERFOPT_OK);
      EXPECT(result->kind == PERFOPT_VALUE_TENSOR);
      DLManagedTensor *output = take(result);
      perfopt_value_free(result);
      if (!same_shape(&output->dl_tensor, &expected[i]) || relative_error(&output->dl_tensor, &expected[i]) > 1e-5)
        fprintf(stderr, "round %d, chunk %d: error %g\n", round, i, relative_error(&output->dl_tensor, &expected[i]));
      EXPECT(same_shape(&output->dl_tensor, &expected[i]));
      EXPECT(relative_error(&output->dl_tensor, &expected[i]) <= 1e-5);
      release(output);
    }
    perfopt_value *reset = NULL;
    EXPECT(perfopt_model_call(model, "reset_states", NULL, 0, &reset) == PERFOPT_OK);
    EXPECT(reset->kind == PERFOPT_VALUE_NONE);
    perfopt_value_free(reset);
  }
  perfopt_value encode_args[1] = {v_tensor(&chunk_tensors[0])};
  perfopt_value *encoded = NULL;
  EXPECT(perfopt_model_call(model, "encode", encode_args, 1, &encoded) == PERFOPT_OK);
  EXPECT(encoded->kind == PERFOPT_VALUE_TUPLE && encoded->length == 2);
  EXPECT(encoded->items[0].kind == PERFOPT_VALUE_TENSOR);
  DLManagedTensor *projected = take(&encoded->items[0]);
  EXPECT(encoded->items[1].kind == PERFOPT_VALUE_INT && encoded->items[1].int_value == 0);
  perfopt_value_free(encoded);
  EXPECT(projected->dl_tensor.ndim == 2 && projected->dl_tensor.shape[0] == 1 && projected->dl_tensor.shape[1] == 64);
  release(projected);
  perfopt_value *result = NULL;
  EXPECT(perfopt_model_call(model, "nope", NULL, 0, &result) == PERFOPT_ERR_INVALID_ARGUMENT);
  EXPECT(strstr(perfopt_last_error(), "reset_states") != NULL);
  perfopt_value wrong[2] = {v_tensor(&chunk_tensors[0]), v_string("16k")};
  EXPECT(perfopt_model_call(model, NULL, wrong, 2, &result) != PERFOPT_OK);
  EXPECT(strstr(perfopt_last_error(), "`sr`") != NULL && strstr(perfopt_last_error(), "int") != NULL);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
  for (int i = 0; i < 20; ++i) {
    free(chunks[i].data);
    free(expected[i].data);
  }
}

static void test_every_argument_kind_goes_in_and_comes_back(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, fixture("kinds.pt"), NULL, &model) == PERFOPT_OK);
  npy x, y;
  EXPECT(npy_load("kinds.x.npy", &x));
  DLTensor xt = npy_tensor(&x);
  float ones[6] = {1, 1, 1, 1, 1, 1}, twos[6] = {2, 2, 2, 2, 2, 2};
  int64_t shape[2] = {2, 3};
  DLTensor ones_t = host(ones, shape, 2), twos_t = host(twos, shape, 2);
  perfopt_value xs[2] = {v_tensor(&ones_t), v_tensor(&ones_t)};
  perfopt_value dims[2] = {v_int(1), v_int(2)};
  perfopt_value pair[2] = {v_int(2), v_double(0.25)};
  perfopt_value args[9] = {
      v_tensor(&xt), v_int(3), v_double(0.5), v_bool(1), v_string("vad"), v_tensor(&twos_t),
      v_items(PERFOPT_VALUE_LIST, xs, 2), v_items(PERFOPT_VALUE_LIST, dims, 2),
      v_items(PERFOPT_VALUE_LIST, pair, 2), /* a list where the schema wants a tuple */
  };
  perfopt_value *result = NULL;
  EXPECT(perfopt_model_call(model, "forward", args, 9, &result) == PERFOPT_OK);
  EXPECT(result->kind == PERFOPT_VALUE_TUPLE && result->length == 5);
  perfopt_value *items = result->items;
  EXPECT(items[0].kind == PERFOPT_VALUE_TENSOR);
  DLManagedTensor *output = take(&items[0]);
  EXPECT(items[1].kind == PERFOPT_VALUE_INT && items[1].int_value == 5);
  EXPECT(items[2].kind == PERFOPT_VALUE_BOOL && items[2].int_value == 0);
  EXPECT(items[3].kind == PERFOPT_VALUE_STRING && items[3].length == 4 && memcmp(items[3].string, "vad!", 4) == 0);
  EXPECT(items[4].kind == PERFOPT_VALUE_LIST && items[4].length == 2);
  EXPECT(items[4].items[0].kind == PERFOPT_VALUE_INT && items[4].items[0].int_value == 2);
  EXPECT(items[4].items[1].kind == PERFOPT_VALUE_INT && items[4].items[1].int_value == 4);
  perfopt_value_free(result);
  EXPECT(npy_load("kinds.y.npy", &y));
  EXPECT(same_shape(&output->dl_tensor, &y));
  EXPECT(relative_error(&output->dl_tensor, &y) <= 1e-6);
  release(output);
  /* An int where a float is wanted, None, an empty string and lists (Swift
   * allocates one slot for them: pointers, not NULL), a tuple. */
  static perfopt_value empty_items[1];
  perfopt_value zero_pair[2] = {v_int(0), v_double(0)};
  perfopt_value plain_args[9] = {
      v_tensor(&xt), v_int(3), v_int(1), v_bool(0), v_string(""), value_of(PERFOPT_VALUE_NONE),
      v_items(PERFOPT_VALUE_LIST, empty_items, 0), v_items(PERFOPT_VALUE_LIST, empty_items, 0),
      v_items(PERFOPT_VALUE_TUPLE, zero_pair, 2),
  };
  EXPECT(perfopt_model_call(model, NULL, plain_args, 9, &result) == PERFOPT_OK);
  EXPECT(result->kind == PERFOPT_VALUE_TUPLE && result->length == 5);
  items = result->items;
  EXPECT(items[0].kind == PERFOPT_VALUE_TENSOR);
  output = take(&items[0]);
  EXPECT(items[1].kind == PERFOPT_VALUE_INT && items[1].int_value == 3);
  EXPECT(items[2].kind == PERFOPT_VALUE_BOOL && items[2].int_value == 1);
  EXPECT(items[3].kind == PERFOPT_VALUE_STRING && items[3].length == 1 && items[3].string[0] == '!');
  EXPECT(items[4].kind == PERFOPT_VALUE_LIST && items[4].length == 0);
  perfopt_value_free(result);
  EXPECT(numel(&output->dl_tensor) == 6);
  for (int i = 0; i < 6; ++i) EXPECT(((const float *)output->dl_tensor.data)[i] == 4.0f);
  release(output);
  free(x.data);
  free(y.data);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

/* Model.collect with `slots` first slots, for run_batched_args. */
static perfopt_status run_batched(perfopt_model *model, perfopt_value *args, size_t n, int32_t max_batch,
                                  size_t slots, DLManagedTensor **outputs, size_t *count) {
  perfopt_status status = perfopt_model_run_batched_args(model, args, n, max_batch, outputs, slots, count);
  if (status == PERFOPT_ERR_BUFFER_TOO_SMALL && *count > slots)
    status = perfopt_model_take_outputs(model, outputs, *count, count);
  return status;
}

static int recommended_batch(const char *report) {
  const char *field = report ? strstr(report, "\"recommended_batch\":") : NULL;
  return field ? atoi(field + strlen("\"recommended_batch\":")) : -1;
}

static void test_batch_dimensions_other_than_zero(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, fixture("lstm_state.pt"), NULL, &model) == PERFOPT_OK);
  static npy inputs[4], expected[3];
  DLTensor tensors[4];
  perfopt_value args[4];
  for (int i = 0; i < 4; ++i) {
    char name[64];
    snprintf(name, sizeof name, "lstm_state.input%d.npy", i);
    EXPECT(npy_load(name, &inputs[i]));
    tensors[i] = npy_tensor(&inputs[i]);
    args[i] = v_tensor(&tensors[i]);
  }
  for (int i = 0; i < 3; ++i) {
    char name[64];
    snprintf(name, sizeof name, "lstm_state.output%d.npy", i);
    EXPECT(npy_load(name, &expected[i]));
  }
  DLManagedTensor *outputs[8] = {0};
  size_t count = 0;
  EXPECT(run_batched(model, args, 4, 2, 8, outputs, &count) != PERFOPT_OK);
  EXPECT(strstr(perfopt_last_error(), "same batch size") != NULL);
  int32_t in_dims[4] = {0, 1, 1, PERFOPT_NOT_BATCHED}, out_dims[3] = {0, 1, 1};
  EXPECT(perfopt_model_set_batch_dims(model, in_dims, 4, out_dims, 3) == PERFOPT_OK);
  int32_t chunks[4] = {1, 2, 5, 0};
  for (int c = 0; c < 4; ++c) {
    EXPECT(run_batched(model, args, 4, chunks[c], 8, outputs, &count) == PERFOPT_OK);
    EXPECT(count == 3);
    for (int k = 0; k < 3; ++k) {
      EXPECT(same_shape(&outputs[k]->dl_tensor, &expected[k]));
      EXPECT(relative_error(&outputs[k]->dl_tensor, &expected[k]) <= 1e-5);
    }
    for (int k = 0; k < 3; ++k) release(outputs[k]);
  }
  /* One slot: BUFFER_TOO_SMALL, then perfopt_model_take_outputs. */
  EXPECT(perfopt_model_run_batched_args(model, args, 4, 2, outputs, 1, &count) == PERFOPT_ERR_BUFFER_TOO_SMALL);
  EXPECT(count == 3);
  EXPECT(perfopt_model_take_outputs(model, outputs, count, &count) == PERFOPT_OK && count == 3);
  for (int k = 0; k < 3; ++k) EXPECT(relative_error(&outputs[k]->dl_tensor, &expected[k]) <= 1e-5);
  for (int k = 0; k < 3; ++k) release(outputs[k]);
  npy sample[3] = {npy_first(&inputs[0], 0), npy_first(&inputs[1], 1), npy_first(&inputs[2], 1)};
  DLTensor sample_t[4] = {npy_tensor(&sample[0]), npy_tensor(&sample[1]), npy_tensor(&sample[2]),
                          npy_tensor(&inputs[3])};
  perfopt_value sample_args[4] = {v_tensor(&sample_t[0]), v_tensor(&sample_t[1]), v_tensor(&sample_t[2]),
                                  v_tensor(&sample_t[3])};
  static char buf[65536];
  size_t needed = 0;
  int32_t batch = 0;
  perfopt_status status;
  char *report = kept_report(model, PERFOPT_REPORT_RECOMMEND_BATCH,
                             perfopt_model_recommend_batch_args(model, sample_args, 4, &batch, buf, sizeof buf, &needed),
                             buf, &status);
  EXPECT(status == PERFOPT_OK && report != NULL);
  int recommended = recommended_batch(report);
  EXPECT(recommended >= 1);
  free(report);
  char *kept = read_report(last_report, model, PERFOPT_REPORT_RECOMMEND_BATCH, &status);
  EXPECT(kept != NULL);
  EXPECT(recommended_batch(kept) == recommended);
  free(kept);
  int32_t wrong_out[3] = {0, 0, 0};
  EXPECT(perfopt_model_set_batch_dims(model, in_dims, 4, wrong_out, 3) == PERFOPT_OK);
  EXPECT(run_batched(model, args, 4, 2, 8, outputs, &count) != PERFOPT_OK);
  EXPECT(strstr(perfopt_last_error(), "output 1") != NULL);
  EXPECT(perfopt_model_set_batch_dims(model, NULL, 0, NULL, 0) == PERFOPT_OK);
  EXPECT(run_batched(model, args, 4, 2, 8, outputs, &count) != PERFOPT_OK);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
  for (int i = 0; i < 3; ++i) free(sample[i].data);
  for (int i = 0; i < 4; ++i) free(inputs[i].data);
  for (int i = 0; i < 3; ++i) free(expected[i].data);
}

static void test_compile_skipped_is_a_note_not_a_failure(void) {
  perfopt_optimizer *optimizer = NULL;
  perfopt_status status = optimizer_on("mps", &optimizer);
  if (status == PERFOPT_ERR_UNSUPPORTED_DEVICE) {
    /* XCTSkip: compilation is skipped only on MPS, and there is none here. */
    ++skipped;
    return;
  }
  EXPECT(status == PERFOPT_OK);
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, fixture("vocoder.pt"), "vocoder", &model) == PERFOPT_OK);
  static float mel[2 * 80 * 32];
  for (size_t i = 0; i < sizeof mel / sizeof mel[0]; ++i) mel[i] = 0.1f;
  int64_t shape[3] = {2, 80, 32};
  DLTensor input = host(mel, shape, 3);
  EXPECT(perfopt_model_compile(model, "default", &input, 1) == PERFOPT_COMPILE_SKIPPED);
  EXPECT(perfopt_last_error() != NULL);
  DLManagedTensor *outputs[8] = {0};
  size_t count = 0;
  EXPECT(perfopt_model_run(model, &input, 1, outputs, 8, &count) == PERFOPT_OK && count == 1);
  EXPECT(outputs[0]->dl_tensor.shape[2] == 512);
  release(outputs[0]);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

static void test_output_count_without_running(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  const char *files[4] = {"vocoder.pt", "two_inputs.pt", "lstm_state.pt", "kinds.pt"};
  size_t counts[3] = {1, 2, 3};
  for (int i = 0; i < 4; ++i) {
    perfopt_model *model = NULL;
    EXPECT(perfopt_model_load(optimizer, fixture(files[i]), NULL, &model) == PERFOPT_OK);
    size_t count = 0;
    perfopt_status status = perfopt_model_output_count(model, &count);
    if (i < 3) {
      EXPECT(status == PERFOPT_OK && count == counts[i]);
    } else {
      EXPECT(status == PERFOPT_ERR_INVALID_ARGUMENT);
    }
    perfopt_model_free(model);
  }
  perfopt_optimizer_free(optimizer);
}

static void test_warmup_report_is_kept_and_read_back(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, fixture("speaker.pt"), NULL, &model) == PERFOPT_OK);
  npy input;
  EXPECT(npy_load("speaker.input0.npy", &input));
  DLTensor tensor = npy_tensor(&input);
  perfopt_status status;
  EXPECT(read_report(last_report, model, PERFOPT_REPORT_WARMUP, &status) == NULL);
  EXPECT(status == PERFOPT_ERR_INVALID_ARGUMENT);
  static char buf[65536];
  size_t needed = 0;
  char *report = kept_report(model, PERFOPT_REPORT_WARMUP,
                             perfopt_model_warmup(model, &tensor, 1, 3, buf, sizeof buf, &needed), buf, &status);
  EXPECT(report != NULL && strstr(report, "\"iterations\":3,") != NULL);
  free(report);
  char *kept = read_report(last_report, model, PERFOPT_REPORT_WARMUP, &status);
  EXPECT(kept != NULL && strstr(kept, "\"iterations\":3,") != NULL);
  free(kept);
  /* initialReportBytes = 16: the report does not fit and is read back. */
  char small[16];
  perfopt_value args[1] = {v_tensor(&tensor)};
  perfopt_status first = perfopt_model_warmup_args(model, args, 1, 2, small, sizeof small, &needed);
  EXPECT(first == PERFOPT_ERR_BUFFER_TOO_SMALL && needed > sizeof small);
  report = kept_report(model, PERFOPT_REPORT_WARMUP, first, small, &status);
  EXPECT(report != NULL && strstr(report, "\"iterations\":2,") != NULL);
  EXPECT(strstr(report, "\"success\":true") != NULL);
  free(report);
  EXPECT(read_report(last_report, model, PERFOPT_REPORT_RECOMMEND_BATCH, &status) == NULL);
  EXPECT(status == PERFOPT_ERR_INVALID_ARGUMENT);
  EXPECT(perfopt_model_warmup(model, &tensor, 1, UINT32_MAX, small, sizeof small, &needed) ==
         PERFOPT_ERR_INVALID_ARGUMENT);
  free(input.data);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

static void test_options_with_the_tuning_fields(void) {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = NULL;
  EXPECT(perfopt_model_load(optimizer, fixture("two_inputs.pt"), NULL, &model) == PERFOPT_OK);
  perfopt_model_options options;
  EXPECT(perfopt_model_options_init(&options, sizeof options) == PERFOPT_OK);
  options.outputs_on_device = 0;
  options.tuning_budget_ms = 500;
  options.tuning_cache_dir = "/tmp/perfopt-swift-tuning";
  options.threads = 1;
  options.batch_budget_ms = 0;
  EXPECT(perfopt_model_set_options(model, &options) == PERFOPT_OK);
  EXPECT(perfopt_model_options_init(&options, sizeof options) == PERFOPT_OK);
  options.outputs_on_device = 0;
  options.tuning_budget_ms = 600001;
  options.tuning_cache_dir = NULL;
  EXPECT(perfopt_model_set_options(model, &options) == PERFOPT_ERR_INVALID_ARGUMENT);
  perfopt_model_options defaults;
  EXPECT(perfopt_model_options_default(&defaults) == PERFOPT_OK);
  EXPECT(perfopt_model_options_init(&options, sizeof options) == PERFOPT_OK);
  options.outputs_on_device = defaults.outputs_on_device;
  options.error_tolerance = 1e-2;
  options.graph_cache_size = defaults.graph_cache_size;
  options.graph_warmup_runs = defaults.graph_warmup_runs;
  options.memory_margin = defaults.memory_margin;
  options.tuning_budget_ms = 250;
  options.tuning_cache_dir = NULL;
  EXPECT(defaults.precision == PERFOPT_PRECISION_FP32 && defaults.reduced_tolerance == 1e-2);
  options.precision = defaults.precision;
  options.reduced_tolerance = defaults.reduced_tolerance;
  options.min_cosine = defaults.min_cosine;
  EXPECT(perfopt_model_set_options(model, &options) == PERFOPT_OK);
  /* setOptions(precision: .allowReduced, reducedTolerance: 5e-2), then minCosine: 2. */
  EXPECT(perfopt_model_options_init(&options, sizeof options) == PERFOPT_OK);
  options.precision = PERFOPT_PRECISION_ALLOW_REDUCED;
  options.reduced_tolerance = 5e-2;
  EXPECT(perfopt_model_set_options(model, &options) == PERFOPT_OK);
  EXPECT(perfopt_model_options_init(&options, sizeof options) == PERFOPT_OK);
  options.precision = PERFOPT_PRECISION_ALLOW_REDUCED;
  options.min_cosine = 2;
  EXPECT(perfopt_model_set_options(model, &options) == PERFOPT_ERR_INVALID_ARGUMENT);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

static atomic_int first_records, second_records;

static void count_record(int32_t level, const char *message, void *user_data) {
  (void)level;
  (void)message;
  atomic_fetch_add((atomic_int *)user_data, 1);
}

static void test_log_handlers_are_replaced_and_reset(void) {
  EXPECT(perfopt_set_log_callback(count_record, &first_records, 5) == PERFOPT_OK);
  perfopt_optimizer *optimizer = cpu_optimizer();
  EXPECT(atomic_load(&first_records) > 0);
  EXPECT(perfopt_set_log_callback(count_record, &second_records, 5) == PERFOPT_OK);
  int before = atomic_load(&first_records);
  perfopt_optimizer *replacement = cpu_optimizer();
  perfopt_optimizer_free(optimizer);
  EXPECT(replacement != NULL);
  EXPECT(atomic_load(&first_records) == before);
  EXPECT(atomic_load(&second_records) > 0);
  EXPECT(perfopt_set_log_callback(count_record, NULL, 9) == PERFOPT_ERR_INVALID_ARGUMENT);
  EXPECT(perfopt_set_log_callback(NULL, NULL, 0) == PERFOPT_OK);
  perfopt_optimizer_free(replacement);
  EXPECT(perfopt_set_log_callback(NULL, NULL, 0) == PERFOPT_OK); /* the defer */
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
      {"testDefaultsAreTheLibrarys", test_defaults_are_the_librarys},
      {"testInferenceScopeNests", test_inference_scope_nests},
      {"testInferenceScopeObjectsExitInOrderAndFreeFromAnyThread", test_inference_scope_objects},
      {"testVocoderRunsAndReports", test_vocoder_runs_and_reports},
      {"testBadInputsThrowAndTheModelStaysUsable", test_bad_inputs_throw_and_the_model_stays_usable},
      {"testMissingModelFileThrows", test_missing_model_file_throws},
      {"testADirectoryIsNotAModelFile", test_a_directory_is_not_a_model_file},
      {"testStatefulModelStreamsWithValuesAndMethods", test_stateful_model_streams_with_values_and_methods},
      {"testEveryArgumentKindGoesInAndComesBack", test_every_argument_kind_goes_in_and_comes_back},
      {"testBatchDimensionsOtherThanZero", test_batch_dimensions_other_than_zero},
      {"testCompileSkippedIsANoteNotAFailure", test_compile_skipped_is_a_note_not_a_failure},
      {"testOutputCountWithoutRunning", test_output_count_without_running},
      {"testWarmupReportIsKeptAndReadBack", test_warmup_report_is_kept_and_read_back},
      {"testOptionsWithTheTuningFields", test_options_with_the_tuning_fields},
      {"testLogHandlersAreReplacedAndReset", test_log_handlers_are_replaced_and_reset},
  };
  int passed = 0, failed = 0;
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; ++i) {
    int before = failures, skipped_before = skipped;
    tests[i].run();
    if (failures != before) {
      ++failed;
      printf("FAIL %s\n", tests[i].name);
    } else if (skipped != skipped_before) {
      printf("skip %s\n", tests[i].name);
    } else {
      ++passed;
      printf("ok   %s\n", tests[i].name);
    }
  }
  printf("%d passed, %d skipped, %d failed\n", passed, skipped, failed);
  return failed ? 1 : 0;
}
