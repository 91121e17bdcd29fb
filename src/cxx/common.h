// What every translation unit of the shim shares: the thread-local last
// error (last_error.h), exception-to-status translation, and small string helpers.
#pragma once

#include <cstring>
#include <exception>
#include <new>
#include <string>

#include <c10/util/Exception.h>

#include "last_error.h"
#include "shim.h"

namespace perfopt_shim {

// Thrown for an argument that does not fit a method's schema: the message
// names the argument and the type the schema wants.
struct ArgumentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Thrown for a result perfopt cannot hand out (a dict, an object): the
// message says what the model returned.
struct UnsupportedResult : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// libtorch's CPU allocator reports a failed allocation as a plain c10::Error
// ("DefaultCPUAllocator: can't allocate memory: you tried to allocate ...");
// oneDNN as "could not ... out of memory". They are out-of-memory failures all
// the same, and the caller (run_batched) halves its chunk on them.
// oneDNN's primitive creation fails with "could not create a primitive" when
// it cannot allocate its scratch memory (seen under an address-space limit:
// safety.host_out_of_memory failed now and then where the allocation hit
// oneDNN instead of libtorch's allocator). Counted as out of memory, so that
// run_batched halves its chunk; a primitive that fails at every size still
// fails, with oneDNN's message, at a batch of one.
inline bool is_out_of_memory_message(const char *message) {
  return std::strstr(message, "can't allocate memory") != nullptr ||
         std::strstr(message, "could not create a primitive") != nullptr ||
         std::strstr(message, "not enough memory") != nullptr ||
         std::strstr(message, "out of memory") != nullptr ||
         std::strstr(message, "std::bad_alloc") != nullptr;
}

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
    const char *message = e.what_without_backtrace();
    set_last_error(message);
    return is_out_of_memory_message(message) ? PSHIM_OUT_OF_MEMORY : PSHIM_TORCH_ERROR;
  } catch (const std::bad_alloc &e) {
    set_last_error(std::string("out of host memory: ") + e.what());
    return PSHIM_OUT_OF_MEMORY;
  } catch (const ArgumentError &e) {
    set_last_error(e.what());
    return PSHIM_ARGUMENT;
  } catch (const UnsupportedResult &e) {
    set_last_error(e.what());
    return PSHIM_UNSUPPORTED_RESULT;
  } catch (const std::exception &e) {
    set_last_error(e.what());
    return is_out_of_memory_message(e.what()) ? PSHIM_OUT_OF_MEMORY : PSHIM_TORCH_ERROR;
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

// Writes text into (buf, len) with *needed set to its size with the NUL; a
// buffer that is too small gets nothing (the Rust side retries).
inline void write_text(const std::string &text, char *buf, size_t len, size_t *needed) {
  *needed = text.size() + 1;
  if (buf != nullptr && len >= text.size() + 1) copy_string(text, buf, len);
}

// JSON string escaping for the few reports the shim writes.
std::string json_string(const std::string &text);

}  // namespace perfopt_shim
