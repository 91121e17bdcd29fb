// The header alone, compiled as C++17 with -Wall -Wextra -Werror -pedantic.
#include "perfopt.h"

#include <cstddef>
#include <cstdio>
#include <type_traits>

static_assert(std::is_standard_layout<perfopt_config>::value, "config is a C struct");
static_assert(PERFOPT_OK == 0, "success is zero");
static_assert(std::is_standard_layout<perfopt_value>::value && std::is_trivially_copyable<perfopt_value>::value,
              "perfopt_value is a C struct");
static_assert(std::is_standard_layout<perfopt_model_options>::value, "options are a C struct");
static_assert(offsetof(perfopt_value, struct_size) == 0, "struct_size comes first");
static_assert(std::is_same<decltype(perfopt_value::items), perfopt_value *>::value, "items nest values");
static_assert(std::is_same<decltype(perfopt_value::tensor), const DLTensor *>::value, "tensors are borrowed");
static_assert(std::is_same<decltype(perfopt_value::managed), DLManagedTensor *>::value, "results own tensors");
static_assert(std::is_same<std::underlying_type<perfopt_status>::type, int32_t>::value, "a 32-bit status");
static_assert(PERFOPT_ABI_VERSION == 6, "this check is for ABI 6");
static_assert(PERFOPT_VALUE_TUPLE == 7 && PERFOPT_NOT_BATCHED == -1, "constants");
static_assert(PERFOPT_COMPILE_SKIPPED != PERFOPT_OK, "skipped is its own status");
// The ABI 3 functions, by their exact signatures.
static_assert(std::is_same<decltype(&perfopt_model_call),
                           perfopt_status (*)(const perfopt_model *, const char *, const perfopt_value *, size_t,
                                              perfopt_value **)>::value,
              "perfopt_model_call");
static_assert(std::is_same<decltype(&perfopt_value_free), void (*)(perfopt_value *)>::value, "perfopt_value_free");
static_assert(std::is_same<decltype(&perfopt_model_set_batch_dims),
                           perfopt_status (*)(perfopt_model *, const int32_t *, size_t, const int32_t *, size_t)>::value,
              "perfopt_model_set_batch_dims");
static_assert(std::is_same<decltype(&perfopt_model_take_outputs),
                           perfopt_status (*)(const perfopt_model *, DLManagedTensor **, size_t, size_t *)>::value,
              "perfopt_model_take_outputs");
static_assert(std::is_same<decltype(&perfopt_config_init), perfopt_status (*)(perfopt_config *, size_t)>::value,
              "perfopt_config_init");
static_assert(std::is_same<decltype(&perfopt_model_options_init),
                           perfopt_status (*)(perfopt_model_options *, size_t)>::value,
              "perfopt_model_options_init");

int main() {
  perfopt_config config{};
  if (perfopt_config_init(&config, sizeof config) != PERFOPT_OK) return 1;
  config.device = "cpu";
  perfopt_optimizer *optimizer = nullptr;
  if (perfopt_optimizer_new(&config, &optimizer) != PERFOPT_OK) return 2;
  perfopt_optimizer_free(optimizer);
  perfopt_optimizer_free(nullptr);
  perfopt_value value{};
  value.struct_size = sizeof value;
  value.kind = PERFOPT_VALUE_LIST;
  perfopt_value *result = nullptr;
  if (perfopt_model_call(nullptr, nullptr, &value, 1, &result) != PERFOPT_ERR_NULL_ARGUMENT) return 4;
  perfopt_value_free(result);
  std::printf("C++17: %s\n", perfopt_version());
  return perfopt_abi_version() == PERFOPT_ABI_VERSION ? 0 : 3;
}
