// The header alone, compiled as C++17 with -Wall -Wextra -Werror -pedantic.
#include "perfopt.h"

#include <cstdio>
#include <type_traits>

static_assert(std::is_standard_layout<perfopt_config>::value, "config is a C struct");
static_assert(PERFOPT_OK == 0, "success is zero");

int main() {
  perfopt_config config{};
  if (perfopt_config_default(&config) != PERFOPT_OK) return 1;
  config.device = "cpu";
  perfopt_optimizer *optimizer = nullptr;
  if (perfopt_optimizer_new(&config, &optimizer) != PERFOPT_OK) return 2;
  perfopt_optimizer_free(optimizer);
  perfopt_optimizer_free(nullptr);
  std::printf("C++17: %s\n", perfopt_version());
  return perfopt_abi_version() == PERFOPT_ABI_VERSION ? 0 : 3;
}
