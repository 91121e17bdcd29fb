/* A program built against the previous ABI, run on this library.
 *
 * It declares by hand the option structs as older headers had them: the
 * ABI 2 perfopt_model_options (before tuning_budget_ms and tuning_cache_dir),
 * the ABI 1 perfopt_config (before malloc_tuning) and the ABI 5 one (before
 * tuning_cache_dir). The library must fill
 * exactly sizeof of each (a canary after the struct stays untouched), must
 * read no more than that when they are applied (the canary's bytes would be
 * refused, or crash, if read as the newer fields), and must accept a struct
 * from a newer header whose bytes past its own struct are zero (refusing it,
 * PERFOPT_ERR_STRUCT_SIZE, once a newer field is set).
 *
 * C11 with -Wall -Wextra -Werror -pedantic. */
#include "perfopt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* perfopt_model_options of ABI 2. */
typedef struct {
  uint32_t struct_size;
  int32_t outputs_on_device;
  double error_tolerance;
  uint32_t graph_cache_size;
  uint32_t graph_warmup_runs;
  double memory_margin;
} abi2_model_options;

/* perfopt_model_options of ABI 4 (before the precision fields). */
typedef struct {
  abi2_model_options abi2;
  uint32_t tuning_budget_ms;
  const char *tuning_cache_dir;
  uint32_t threads;
  uint32_t batch_budget_ms;
} abi4_model_options;

/* perfopt_config of ABI 1. */
typedef struct {
  uint32_t struct_size;
  int32_t read_environment;
  const char *device;
  int32_t cudnn_benchmark;
  int32_t tf32;
  int32_t cpu_optimization;
  int32_t torch_compile;
  const char *compile_mode;
  int32_t intra_op_threads;
  int32_t inter_op_threads;
} abi1_config;

/* perfopt_config of ABI 5 (before tuning_cache_dir). */
typedef struct {
  abi1_config abi1;
  int32_t malloc_tuning;
  const char *onnxruntime_library;
} abi5_config;

/* 0x7f in every byte: read as tuning_budget_ms or malloc_tuning it is out of
 * range (refused), read as tuning_cache_dir a non-canonical pointer. */
#define CANARY 0x7f
#define CANARY_BYTES 64

typedef struct {
  abi2_model_options options;
  unsigned char canary[CANARY_BYTES];
} wrapped_options;

typedef struct {
  abi1_config config;
  unsigned char canary[CANARY_BYTES];
} wrapped_config;

typedef struct {
  abi5_config config;
  unsigned char canary[CANARY_BYTES];
} wrapped_abi5_config;

/* A struct as a newer header than the library's would have it. */
typedef struct {
  perfopt_config config;
  int64_t field_of_a_later_abi;
} newer_config;

typedef struct {
  perfopt_model_options options;
  int64_t field_of_a_later_abi;
} newer_options;

static int failures = 0;

#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);    \
      ++failures;                                                    \
    }                                                                \
  } while (0)

#define CHECK_OK(call)                                                                            \
  do {                                                                                            \
    perfopt_status status_ = (call);                                                              \
    if (status_ != PERFOPT_OK) {                                                                  \
      const char *message_ = perfopt_last_error();                                                \
      fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #call, perfopt_status_name(status_), \
              message_ ? message_ : "");                                                          \
      ++failures;                                                                                 \
    }                                                                                             \
  } while (0)

static int untouched(const unsigned char *bytes, size_t n) {
  size_t i;
  for (i = 0; i < n; ++i)
    if (bytes[i] != CANARY) return 0;
  return 1;
}

static int contains(const char *text, const char *needle) { return text && strstr(text, needle) != NULL; }

int main(void) {
  const char *env = getenv("PERFOPT_FIXTURES");
  char path[4096];
  static char report[1 << 16];
  size_t needed = 0;
  wrapped_config old_config;
  wrapped_options old_options;
  newer_config newer;
  newer_options newer_opts;
  perfopt_optimizer *optimizer = NULL;
  perfopt_model *model = NULL;

  printf("library %s, ABI %u; this program's options are ABI 2 (%u bytes), its config ABI 1 (%u bytes)\n",
         perfopt_version(), (unsigned)perfopt_abi_version(), (unsigned)sizeof(abi2_model_options),
         (unsigned)sizeof(abi1_config));
  /* An older program checks for at least its own ABI: option structs carry struct_size. */
  CHECK(perfopt_abi_version() >= 2);
  CHECK(sizeof(abi2_model_options) < sizeof(perfopt_model_options));
  CHECK(sizeof(abi1_config) < sizeof(perfopt_config));

  /* perfopt_config_init fills the ABI 1 struct and nothing after it. */
  memset(&old_config, CANARY, sizeof old_config);
  CHECK_OK(perfopt_config_init((perfopt_config *)&old_config.config, sizeof old_config.config));
  CHECK(untouched(old_config.canary, sizeof old_config.canary));
  CHECK(old_config.config.struct_size == sizeof(abi1_config));
  CHECK(old_config.config.read_environment == 1);
  CHECK(old_config.config.device == NULL && old_config.config.compile_mode == NULL);
  CHECK(old_config.config.cudnn_benchmark == PERFOPT_AUTO && old_config.config.tf32 == PERFOPT_AUTO);
  CHECK(old_config.config.cpu_optimization == PERFOPT_AUTO && old_config.config.torch_compile == PERFOPT_AUTO);
  CHECK(old_config.config.intra_op_threads == 0 && old_config.config.inter_op_threads == 0);

  /* ... and reads nothing after it: malloc_tuning would be 0x7f7f7f7f. */
  old_config.config.device = "cpu";
  old_config.config.read_environment = 0;
  CHECK_OK(perfopt_optimizer_new((const perfopt_config *)&old_config.config, &optimizer));
  CHECK(untouched(old_config.canary, sizeof old_config.canary));
  {
    /* The ABI 5 config (before tuning_cache_dir): filled and read no further. */
    wrapped_abi5_config abi5;
    perfopt_optimizer *five = NULL;
    memset(&abi5, CANARY, sizeof abi5);
    CHECK_OK(perfopt_config_init((perfopt_config *)&abi5.config, sizeof abi5.config));
    CHECK(untouched(abi5.canary, sizeof abi5.canary));
    CHECK(abi5.config.abi1.struct_size == sizeof(abi5_config) && abi5.config.onnxruntime_library == NULL);
    abi5.config.abi1.device = "cpu";
    abi5.config.abi1.read_environment = 0;
    CHECK_OK(perfopt_optimizer_new((const perfopt_config *)&abi5.config, &five));
    CHECK(five != NULL);
    perfopt_optimizer_free(five);
  }
  if (!optimizer) {
    fprintf(stderr, "no optimizer: stopping\n");
    return 1;
  }
  CHECK_OK(perfopt_optimizer_report(optimizer, report, sizeof report, &needed));
  CHECK(contains(report, "\"kind\":\"cpu\""));

  /* perfopt_model_options_init fills the ABI 2 struct and nothing after it. */
  memset(&old_options, CANARY, sizeof old_options);
  CHECK_OK(perfopt_model_options_init((perfopt_model_options *)&old_options.options, sizeof old_options.options));
  CHECK(untouched(old_options.canary, sizeof old_options.canary));
  CHECK(old_options.options.struct_size == sizeof(abi2_model_options));
  CHECK(old_options.options.outputs_on_device == 0);
  CHECK(old_options.options.error_tolerance == 1e-3);
  CHECK(old_options.options.graph_cache_size == 8 && old_options.options.graph_warmup_runs == 3);
  CHECK(old_options.options.memory_margin == 0.1);

  snprintf(path, sizeof path, "%s/two_inputs.pt", env ? env : "build/fixtures");
  CHECK_OK(perfopt_model_load(optimizer, path, "abi2", &model));
  if (!model) {
    fprintf(stderr, "no model: stopping\n");
    perfopt_optimizer_free(optimizer);
    return 1;
  }
  /* Applied: the fields it has take effect, those it lacks get defaults
   * (tuning_budget_ms and tuning_cache_dir are never read from the canary). */
  old_options.options.error_tolerance = 1e-4;
  CHECK_OK(perfopt_model_set_options(model, (const perfopt_model_options *)&old_options.options));
  CHECK(untouched(old_options.canary, sizeof old_options.canary));
  CHECK_OK(perfopt_model_compile(model, "max-autotune", NULL, 0));
  {
    static float x[2 * 16], y[2 * 4];
    int64_t xs[2] = {2, 16}, ys[2] = {2, 4};
    DLTensor inputs[2];
    DLManagedTensor *outputs[2] = {NULL, NULL};
    size_t n = 0, i;
    memset(inputs, 0, sizeof inputs);
    inputs[0].data = x;
    inputs[0].device.device_type = kDLCPU;
    inputs[0].ndim = 2;
    inputs[0].dtype.code = kDLFloat;
    inputs[0].dtype.bits = 32;
    inputs[0].dtype.lanes = 1;
    inputs[0].shape = xs;
    inputs[1] = inputs[0];
    inputs[1].data = y;
    inputs[1].shape = ys;
    CHECK_OK(perfopt_model_run(model, inputs, 2, outputs, 2, &n));
    CHECK(n == 2);
    for (i = 0; i < n; ++i) outputs[i]->deleter(outputs[i]);
  }
  CHECK_OK(perfopt_model_report(model, report, sizeof report, &needed));
  CHECK(contains(report, "\"error_tolerance\":0.0001"));
  CHECK(contains(report, "\"budget_ms\":2000")); /* tuning_budget_ms it lacks: 0, the CPU's default */

  /* Larger than the library's own struct (a newer header): _init fills what
     this library knows and zeroes the rest; accepted while the rest stays
     zero (the extensible-struct rule), refused once a newer field is set. */
  memset(&newer, CANARY, sizeof newer);
  CHECK_OK(perfopt_config_init(&newer.config, sizeof newer));
  CHECK(newer.config.struct_size == sizeof newer && newer.field_of_a_later_abi == 0);
  newer.config.device = "cpu";
  newer.config.read_environment = 0;
  {
    perfopt_optimizer *accepted = NULL;
    CHECK_OK(perfopt_optimizer_new(&newer.config, &accepted));
    CHECK(accepted != NULL);
    perfopt_optimizer_free(accepted);
    perfopt_optimizer *refused = NULL;
    newer.field_of_a_later_abi = 1;
    CHECK(perfopt_optimizer_new(&newer.config, &refused) == PERFOPT_ERR_STRUCT_SIZE);
    CHECK(refused == NULL);
    CHECK(contains(perfopt_last_error(), "does not know"));
  }
  {
    /* An absurd size is refused, and nothing is written. */
    unsigned char huge[8192];
    memset(huge, CANARY, sizeof huge);
    CHECK(perfopt_config_init((perfopt_config *)(void *)huge, sizeof huge) == PERFOPT_ERR_STRUCT_SIZE);
    CHECK(untouched(huge, sizeof huge));
  }
  memset(&newer_opts, CANARY, sizeof newer_opts);
  CHECK_OK(perfopt_model_options_init(&newer_opts.options, sizeof newer_opts));
  CHECK(newer_opts.field_of_a_later_abi == 0);
  CHECK_OK(perfopt_model_set_options(model, &newer_opts.options));
  newer_opts.field_of_a_later_abi = 7;
  CHECK(perfopt_model_set_options(model, &newer_opts.options) == PERFOPT_ERR_STRUCT_SIZE);
  CHECK(contains(perfopt_last_error(), "larger than this library's"));

  /* ABI 4's options (before precision): filled and read to their end only,
     the precision fields taking their defaults. */
  {
    struct {
      abi4_model_options options;
      unsigned char canary[CANARY_BYTES];
    } abi4;
    memset(&abi4, CANARY, sizeof abi4);
    CHECK_OK(perfopt_model_options_init((perfopt_model_options *)&abi4.options, sizeof abi4.options));
    CHECK(untouched(abi4.canary, sizeof abi4.canary));
    CHECK(abi4.options.abi2.struct_size == sizeof(abi4_model_options) && abi4.options.threads == 0);
    abi4.options.threads = 1;
    CHECK_OK(perfopt_model_set_options(model, (const perfopt_model_options *)&abi4.options));
    CHECK(untouched(abi4.canary, sizeof abi4.canary));
  }

  /* This header's own layouts are accepted as they are. */
  {
    perfopt_config current;
    perfopt_model_options options;
    CHECK_OK(perfopt_config_init(&current, sizeof current));
    CHECK(current.struct_size == sizeof current && current.malloc_tuning == PERFOPT_AUTO);
    CHECK_OK(perfopt_model_options_init(&options, sizeof options));
    CHECK(options.struct_size == sizeof options && options.tuning_budget_ms == 0 && options.tuning_cache_dir == NULL);
    CHECK(options.precision == PERFOPT_PRECISION_FP32 && options.reduced_tolerance == 1e-2 && options.min_cosine == 0);
    CHECK_OK(perfopt_model_set_options(model, &options));
  }

  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
  printf("abi_compat: %s\n", failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}
