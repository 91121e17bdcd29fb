/* The header alone, compiled as C11 with -Wall -Wextra -Werror -pedantic,
 * and linked: every declaration is used once so that a typo fails here. */
#include "perfopt.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* The ABI 3 types, at compile time: perfopt_value's layout as the library
 * reads it, the constants, and the options' new fields. */
typedef char value_kinds_are_distinct[(PERFOPT_VALUE_NONE == 0 && PERFOPT_VALUE_TENSOR == 1 && PERFOPT_VALUE_INT == 2 &&
                                       PERFOPT_VALUE_DOUBLE == 3 && PERFOPT_VALUE_BOOL == 4 &&
                                       PERFOPT_VALUE_STRING == 5 && PERFOPT_VALUE_LIST == 6 &&
                                       PERFOPT_VALUE_TUPLE == 7)
                                          ? 1
                                          : -1];
typedef char struct_size_comes_first[offsetof(perfopt_value, struct_size) == 0 ? 1 : -1];
typedef char options_grew[offsetof(perfopt_model_options, tuning_budget_ms) > offsetof(perfopt_model_options, memory_margin) ? 1 : -1];
typedef char config_grew[offsetof(perfopt_config, malloc_tuning) > offsetof(perfopt_config, inter_op_threads) ? 1 : -1];
typedef char abi_is_6[PERFOPT_ABI_VERSION == 6 ? 1 : -1];
typedef char report_kinds[(PERFOPT_REPORT_WARMUP != PERFOPT_REPORT_RECOMMEND_BATCH && PERFOPT_NOT_BATCHED < 0) ? 1 : -1];
typedef char skipped_is_not_an_error_code[(PERFOPT_COMPILE_SKIPPED != PERFOPT_OK) ? 1 : -1];

static void on_log(int32_t level, const char *message, void *user_data) {
  (void)level;
  (void)message;
  (void)user_data;
}

int main(void) {
  perfopt_config config;
  perfopt_optimizer *optimizer = NULL;
  perfopt_scope *scope = NULL;
  perfopt_status status;
  int32_t batch = 0;
  size_t needed = 0;
  perfopt_log_callback callback = on_log;
  perfopt_model_options options;
  perfopt_value items[2];
  perfopt_value args[2];
  perfopt_value *result = NULL;
  DLTensor tensor;
  int32_t dims[2] = {0, PERFOPT_NOT_BATCHED};
  size_t count = 0;
  DLManagedTensor *outputs[1];
  (void)sizeof(value_kinds_are_distinct);
  (void)sizeof(struct_size_comes_first);
  (void)sizeof(options_grew);
  (void)sizeof(config_grew);
  (void)sizeof(abi_is_6);
  (void)sizeof(report_kinds);
  (void)sizeof(skipped_is_not_an_error_code);

  if (perfopt_abi_version() != PERFOPT_ABI_VERSION) return 1;
  if (perfopt_config_init(&config, sizeof config) != PERFOPT_OK) return 2;
  if (config.struct_size != sizeof(perfopt_config)) return 3;
  if (perfopt_config_default(&config) != PERFOPT_OK || config.malloc_tuning != PERFOPT_AUTO) return 3;
  if (perfopt_model_options_init(&options, sizeof options) != PERFOPT_OK) return 11;
  if (perfopt_model_options_default(&options) != PERFOPT_OK || options.tuning_cache_dir != NULL) return 12;
  options.tuning_budget_ms = 500;
  config.device = "cpu";
  config.read_environment = 0;
  config.cudnn_benchmark = PERFOPT_AUTO;
  status = perfopt_optimizer_new(&config, &optimizer);
  if (status != PERFOPT_OK) {
    fprintf(stderr, "%s: %s\n", perfopt_status_name(status), perfopt_last_error());
    return 4;
  }
  if (perfopt_optimizer_report(optimizer, NULL, 0, &needed) != PERFOPT_ERR_BUFFER_TOO_SMALL) return 5;
  if (perfopt_optimal_batch_size(optimizer, &batch) != PERFOPT_OK || batch != 1) return 6;
  if (perfopt_inference_enter(optimizer, &scope) != PERFOPT_OK) return 7;
  if (perfopt_inference_exit(scope) != PERFOPT_OK) return 8;
  if (perfopt_set_log_callback(callback, NULL, PERFOPT_LOG_WARN) != PERFOPT_OK) return 9;
  if (perfopt_set_log_callback(NULL, NULL, PERFOPT_LOG_OFF) != PERFOPT_OK) return 10;
  /* Every ABI 3 function, with a NULL model: each fails cleanly. */
  memset(&tensor, 0, sizeof tensor);
  memset(items, 0, sizeof items);
  items[0].struct_size = sizeof(perfopt_value);
  items[0].kind = PERFOPT_VALUE_INT;
  items[0].int_value = 16000;
  items[1].struct_size = sizeof(perfopt_value);
  items[1].kind = PERFOPT_VALUE_STRING;
  items[1].string = "vad";
  items[1].length = 3;
  args[0].struct_size = sizeof(perfopt_value);
  args[0].kind = PERFOPT_VALUE_TENSOR;
  args[0].tensor = &tensor;
  args[0].managed = NULL;
  args[1] = args[0];
  args[1].kind = PERFOPT_VALUE_TUPLE;
  args[1].items = items;
  args[1].length = 2;
  args[1].tensor = NULL;
  if (perfopt_model_call(NULL, "forward", args, 2, &result) != PERFOPT_ERR_NULL_ARGUMENT || result != NULL) return 13;
  if (perfopt_model_compile_args(NULL, NULL, args, 2) != PERFOPT_ERR_NULL_ARGUMENT) return 14;
  if (perfopt_model_warmup_args(NULL, args, 2, 1, NULL, 0, &needed) != PERFOPT_ERR_NULL_ARGUMENT) return 15;
  if (perfopt_model_recommend_batch_args(NULL, args, 2, &batch, NULL, 0, &needed) != PERFOPT_ERR_NULL_ARGUMENT)
    return 16;
  if (perfopt_model_run_batched_args(NULL, args, 2, 0, outputs, 1, &count) != PERFOPT_ERR_NULL_ARGUMENT) return 17;
  if (perfopt_model_take_outputs(NULL, outputs, 1, &count) != PERFOPT_ERR_NULL_ARGUMENT) return 18;
  if (perfopt_model_output_count(NULL, &count) != PERFOPT_ERR_NULL_ARGUMENT) return 19;
  if (perfopt_model_methods(NULL, NULL, 0, &needed) != PERFOPT_ERR_NULL_ARGUMENT) return 20;
  if (perfopt_model_last_report(NULL, PERFOPT_REPORT_WARMUP, NULL, 0, &needed) != PERFOPT_ERR_NULL_ARGUMENT) return 21;
  if (perfopt_model_set_batch_dims(NULL, dims, 2, NULL, 0) != PERFOPT_ERR_NULL_ARGUMENT) return 22;
  if (perfopt_model_set_options(NULL, &options) != PERFOPT_ERR_NULL_ARGUMENT) return 23;
  perfopt_value_free(result);
  perfopt_value_free(NULL);
  perfopt_optimizer_free(optimizer);
  printf("C11: %s, ABI %u, %s\n", perfopt_version(), (unsigned)perfopt_abi_version(),
         strcmp(perfopt_status_name(PERFOPT_OK), "PERFOPT_OK") == 0 ? "ok" : "bad names");
  return 0;
}
