// Exception-to-status translation shared by the shim's translation units.
#pragma once

#include <exception>
#include <new>
#include <string>

#include <c10/util/Exception.h>

#include "shim.h"

namespace perfopt_shim {

void set_last_error(std::string message);
void clear_last_error();

// Runs `body` and turns whatever it throws into a status plus a message, so
// that no exception ever leaves an extern "C" function.
template <typename F>
int guarded(F &&body) noexcept {
  clear_last_error();
  try {
    body();
    return PSHIM_OK;
  } catch (const c10::OutOfMemoryError &e) {
    set_last_error(e.what_without_backtrace());
    return PSHIM_OUT_OF_MEMORY;
  } catch (const c10::Error &e) {
    set_last_error(e.what_without_backtrace());
    return PSHIM_TORCH_ERROR;
  } catch (const std::bad_alloc &e) {
    set_last_error(std::string("out of host memory: ") + e.what());
    return PSHIM_OUT_OF_MEMORY;
  } catch (const std::exception &e) {
    set_last_error(e.what());
    return PSHIM_TORCH_ERROR;
  } catch (...) {
    set_last_error("unknown C++ exception");
    return PSHIM_UNKNOWN;
  }
}

// Copies `value` into a caller's buffer, truncating, always NUL-terminated.
inline void copy_string(const std::string &value, char *buf, size_t len) {
  if (buf == nullptr || len == 0) return;
  size_t n = value.size() < len - 1 ? value.size() : len - 1;
  value.copy(buf, n);
  buf[n] = '\0';
}

}  // namespace perfopt_shim
