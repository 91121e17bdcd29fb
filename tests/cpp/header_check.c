/* The header alone, compiled as C11 with -Wall -Wextra -Werror -pedantic,
 * and linked: every declaration is used once so that a typo fails here. */
#include "perfopt.h"

#include <stdio.h>
#include <string.h>

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

  if (perfopt_abi_version() != PERFOPT_ABI_VERSION) return 1;
  if (perfopt_config_default(&config) != PERFOPT_OK) return 2;
  if (config.struct_size != sizeof(perfopt_config)) return 3;
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
  perfopt_optimizer_free(optimizer);
  printf("C11: %s, ABI %u, %s\n", perfopt_version(), (unsigned)perfopt_abi_version(),
         strcmp(perfopt_status_name(PERFOPT_OK), "PERFOPT_OK") == 0 ? "ok" : "bad names");
  return 0;
}
